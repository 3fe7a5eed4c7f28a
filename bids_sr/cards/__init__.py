"""The model-card subsystem: where shipped weights and their cards live, and what a card says.

Every trained method ships ``<stem>.safetensors`` with a model card ``<stem>.card.json``
beside it (and its rendering ``<stem>.md``); a per-scan method ships the card alone
(``"weights": null``). One package owns that store:

- :mod:`bids_sr.cards.paths` — the folder (:data:`~bids_sr.cards.paths.WEIGHTS_DIR`, the one
  setting tests point elsewhere), the naming rule of shipped weights, the card beside a
  weights file and the weights beside a card;
- :mod:`bids_sr.cards.read` — reading cards (one, or every card of a folder);
- :mod:`bids_sr.cards.write` — updating a card and writing its markdown rendering;
- :mod:`bids_sr.cards.evidence` — what a card's evidence records prove for an input (the
  queries ``auto``, the report and the unvalidated-method warning ask);
- :mod:`bids_sr.cards.tables` — markdown renderings of cards (the ``.md`` beside a card and
  the tables of scores and evidence);
- :mod:`bids_sr.cards.page` — the documentation's Models page
  (``python -m bids_sr.cards.page > docs/models.md``).

The package reads and writes JSON and markdown only: it imports no torch, nipype or pybids,
and nothing of bids_sr but :mod:`bids_sr.fileio`, so the numerical core may ask it where
weights live without depending on anything above itself.
"""
