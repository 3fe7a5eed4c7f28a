"""Shared fixtures: the demo dataset, a CLI runner, and the shared data folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bids_sr" / "data" / "demo"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def demo_copy(tmp_path):
    """A writable copy of the demo dataset (tests that alter inputs use this)."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target)
    return target


@pytest.fixture
def shared_data():
    """../shared/data, or skip the test with the reason."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def run_cli(capsys):
    """Run ``bids_sr`` in-process; return (exit code, stderr text)."""
    from bids_sr.cli.run import main

    def _run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse errors and --version
            code = exc.code
        return code, capsys.readouterr().err

    return _run
