"""bids_sr.reports"""
