"""bids_sr: a BIDS App that super-resolves anatomical brain MRI."""

from bids_sr.__about__ import __version__

__all__ = ["__version__"]
