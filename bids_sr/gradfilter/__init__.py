"""bids_sr.gradfilter"""
