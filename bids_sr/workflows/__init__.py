"""bids_sr.workflows"""
