"""The Boutiques descriptor: generated from the parser, committed, valid, and round-trips."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO

from bids_sr.boutiques import (
    DESCRIPTOR_PATH,
    MACHINE_DEPENDENT_DEFAULTS,
    dumps,
    generate_descriptor,
)
from bids_sr.cli.parser import build_parser


def _bosh() -> str | None:
    found = shutil.which("bosh")
    if found:
        return found
    beside = Path(sys.executable).with_name("bosh")  # the test's own virtual environment
    return str(beside) if beside.exists() else None


def test_committed_descriptor_matches_the_parser():
    committed = DESCRIPTOR_PATH.read_text()
    assert committed == dumps(generate_descriptor()), (
        "bids_sr/data/boutiques.json is out of date with the parser; regenerate it with "
        "`python -m bids_sr.boutiques`"
    )


def test_descriptor_does_not_depend_on_the_machine(monkeypatch):
    """--nprocs defaults to os.cpu_count(); the descriptor must not carry that number."""
    monkeypatch.setattr("os.cpu_count", lambda: 97)
    assert dumps(generate_descriptor()) == DESCRIPTOR_PATH.read_text()


def test_every_parser_argument_is_an_input():
    descriptor = generate_descriptor()
    inputs = {entry["id"]: entry for entry in descriptor["inputs"]}
    parser = build_parser()
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "version")}
    assert set(inputs) == dests
    # command line: program then every value key, positional ones first and in order
    tokens = descriptor["command-line"].split()
    assert tokens[:4] == ["bids_sr", "[BIDS_DIR]", "[OUTPUT_DIR]", "[ANALYSIS_LEVEL]"]
    assert sorted(tokens[1:]) == sorted(entry["value-key"] for entry in inputs.values())
    # types, lists, choices, flags, defaults come from argparse
    assert inputs["bids_dir"]["type"] == "File" and not inputs["bids_dir"]["optional"]
    assert inputs["analysis_level"]["value-choices"] == ["participant", "group"]
    assert inputs["participant_label"]["list"] is True
    assert inputs["participant_label"]["command-line-flag"] == "--participant-label"
    assert inputs["scale"]["type"] == "Number" and inputs["scale"]["minimum"] == 1
    assert inputs["nprocs"]["integer"] is True and "default-value" not in inputs["nprocs"]
    assert inputs["method"]["default-value"] == "auto"
    assert "srrecnn" in inputs["method"]["value-choices"]
    assert inputs["skip_bids_validation"]["type"] == "Flag"
    assert inputs["work_dir"]["command-line-flag"] == "--work-dir"
    assert inputs["plugin_config"]["type"] == "File"
    assert MACHINE_DEPENDENT_DEFAULTS <= set(inputs)
    assert descriptor["container-image"]["type"] == "docker"
    assert descriptor["output-files"][0]["path-template"] == "[OUTPUT_DIR]"


@pytest.fixture
def bosh():
    path = _bosh()
    if path is None:
        pytest.skip("Boutiques is not installed (pip install boutiques) — `bosh` not found")
    return path


def test_bosh_validates_the_descriptor(bosh):
    result = subprocess.run(
        [bosh, "validate", str(DESCRIPTOR_PATH)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_bosh_command_line_parses_back(bosh, tmp_path):
    """An invocation rendered by `bosh exec simulate` is accepted by our own parser."""
    invocation = {
        "bids_dir": str(DEMO),
        "output_dir": str(tmp_path / "out"),
        "analysis_level": "participant",
        "participant_label": ["01", "02"],
        "scale": [1, 1, 2],
        "method": ["linear"],
        "skip_bids_validation": True,
        "mem_gb": 2.5,
        "nprocs": 2,
        "work_dir": str(tmp_path / "work"),
    }
    inv_file = tmp_path / "invocation.json"
    inv_file.write_text(json.dumps(invocation))
    result = subprocess.run(
        [bosh, "exec", "simulate", str(DESCRIPTOR_PATH), "-i", str(inv_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    command = next(line for line in result.stdout.splitlines() if line.startswith("bids_sr "))
    argv = shlex.split(command)[1:]
    opts = build_parser().parse_args(argv)
    assert opts.bids_dir == DEMO
    assert opts.analysis_level == "participant"
    assert opts.participant_label == ["01", "02"]
    assert opts.scale == [1.0, 1.0, 2.0]
    assert opts.method == ["linear"]
    assert opts.skip_bids_validation is True
    assert opts.mem_gb == 2.5 and opts.nprocs == 2
    assert opts.work_dir == tmp_path / "work"
