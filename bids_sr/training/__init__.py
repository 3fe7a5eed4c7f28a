"""bids_sr.training"""
