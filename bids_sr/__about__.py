"""Package metadata, kept in one place so the CLI, sidecars and the build agree."""

__version__ = "0.1.0"
__packagename__ = "bids_sr"
__url__ = "https://github.com/bids-sr/bids_sr"
