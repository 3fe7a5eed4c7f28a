"""The methods ``bids_sr-train`` trains and their per-method defaults.

Shared by the command line (:mod:`bids_sr.training.cli`: choices, the patch-size check) and
the training itself (:mod:`bids_sr.training.run`: iterations, batch, learning rate), so that
neither imports the other's module for them.
"""

from __future__ import annotations

from typing import Any

METHODS = ("fsrcnn", "espcn", "srgan", "srrecnn", "srrecnn-t2w", "srrecnn-flair", "gradfilter")
# per-method defaults sized for a CPU run; the published architectures are kept
DEFAULTS: dict[str, dict[str, Any]] = {
    "fsrcnn": {"iterations": 4000, "batch_size": 4, "patch_size": 32, "lr": 1e-3,
               "config": {"padding_mode": "replicate"}},
    "espcn": {"iterations": 2000, "batch_size": 8, "patch_size": 24, "lr": 1e-3,
              "config": {"padding_mode": "replicate"}},
    "srgan": {"iterations": 6000, "batch_size": 4, "patch_size": 16, "lr": 2e-4,
              "config": {"padding_mode": "replicate"}},
    "srrecnn": {"iterations": 1000, "batch_size": 8, "patch_size": 16, "lr": 1e-3},
    "srrecnn-t2w": {"iterations": 1000, "batch_size": 8, "patch_size": 16, "lr": 1e-3},
    "srrecnn-flair": {"iterations": 1000, "batch_size": 8, "patch_size": 16, "lr": 1e-3},
    "gradfilter": {"patch_size": 7},
}
