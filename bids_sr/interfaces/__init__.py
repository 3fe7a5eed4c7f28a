"""bids_sr.interfaces"""
