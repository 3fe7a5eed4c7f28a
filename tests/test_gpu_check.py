"""scripts/gpu_check.sh on a machine without a CUDA GPU: it says so and exits 0 (on a GPU
machine it runs the CUDA tests and benchmarks; see the script)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO


def test_gpu_check_says_there_is_no_gpu_and_succeeds(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the script would run the full check")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no CUDA GPU" in done.stdout
    assert not (tmp_path / "gpu_check.json").exists()
