"""``python -m bids_sr`` runs the BIDS App, like the ``bids_sr`` console script."""

from bids_sr.cli.run import main

main()
