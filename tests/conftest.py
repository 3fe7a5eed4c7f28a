"""Paths and helpers shared by the tests: the demo dataset, CLI runners, the shared data
folder, tiny untrained weights, a centre crop, and a check that an HTML report renders in
headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
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


@pytest.fixture
def run_participant_with(capsys):
    """Run a ``bids_sr ... participant`` command line in-process, as ``run_cli`` does, with
    recipes it has no option for (``selfsr_recipe=SelfSRRecipe(...)``,
    ``registration_qc=...``: fields of the run configuration's ``workflow`` section,
    :mod:`bids_sr.recipes`); return (exit code, stderr text). Errors are raised, not turned
    into exit codes."""
    from bids_sr.cli.parser import parse_args
    from bids_sr.cli.run import run_participant

    def _run(*argv, **recipes):
        config = parse_args([str(a) for a in argv])
        for name, recipe in recipes.items():
            assert hasattr(config.workflow, name), name
            setattr(config.workflow, name, recipe)
        code = run_participant(config)
        return code, capsys.readouterr().err

    return _run


@pytest.fixture(scope="session")
def chromium() -> str:
    """The headless Chromium binary (installed with scripts/install_chromium.sh as root),
    or skip the test with the reason."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be installed without root")
    script = REPO / "scripts" / "install_chromium.sh"
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=600)
    found = shutil.which("chromium")
    if result.returncode != 0 or not found:
        pytest.skip(f"chromium could not be installed: {result.stderr.strip()[-300:]}")
    return found


def _chromium_args(binary, profile):
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}"]  # fmt: skip


def assert_renders_in_chromium(binary: str, report: Path, workdir: Path, n_images: int) -> None:
    """Screenshot ``report``: not blank, the black figures cover part of the page; and in a
    copy with a probe script, all ``n_images`` images decoded (naturalWidth > 0)."""
    shot = workdir / "shot.png"
    run = subprocess.run(
        [*_chromium_args(binary, workdir / "profile1"), f"--screenshot={shot}",
         "--window-size=1280,2000", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), run.stderr[-2000:]
    pixels = mpimg.imread(str(shot))[..., :3]
    assert pixels.std() > 0.1
    assert (pixels.mean(axis=-1) < 0.9).mean() > 0.1  # the black figures cover the page
    probe = workdir / "probe.html"
    script = (
        "<script>window.addEventListener('load', () => { const n = Array.from("
        "document.images).filter(i => i.complete && i.naturalWidth > 0).length; "
        "document.body.setAttribute('data-loaded', n + '/' + document.images.length); });"
        "</script></body>"
    )
    probe.write_text(report.read_text().replace("</body>", script))
    dom = subprocess.run(
        [*_chromium_args(binary, workdir / "profile2"), "--virtual-time-budget=5000",
         "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    assert f'data-loaded="{n_images}/{n_images}"' in dom, dom[:500]


#: the architecture of :func:`tiny_weights`: a two-layer network, seconds to build and run
TINY = {"layers": 2, "features": 4}


def tiny_weights(path: Path, method: str = "srrecnn-t2w") -> Path:
    """An untrained tiny ``method`` network saved as a ×2 weights file (a test fixture, not a
    model): what the tests that wire a learned or guided method into a workflow need."""
    import torch

    from bids_sr.models.registry import get_spec
    from bids_sr.models.weights import save_weights

    torch.manual_seed(0)
    return save_weights(get_spec(method).build(TINY), path, method=method, config=TINY,
                        factors=(2, 2, 2), card={"note": "untrained, test fixture"})  # fmt: skip


def centre_crop(data: np.ndarray, size: int = 96) -> np.ndarray:
    """The central ``size``³ block of a volume (keeps the shared-data checks small)."""
    starts = [(n - size) // 2 for n in data.shape]
    return data[tuple(slice(s, s + size) for s in starts)]
