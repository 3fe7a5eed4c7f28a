"""bids_sr.cli"""
