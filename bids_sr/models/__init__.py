"""bids_sr.models"""
