"""The Boutiques descriptor: generated from the parser, committed, valid, and round-trips."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEMO, REPO

from bids_sr.cli.boutiques import (
    DESCRIPTOR_PATH,
    MACHINE_DEPENDENT_DEFAULTS,
    dumps,
    generate_descriptor,
    input_id,
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
        "`python -m bids_sr.cli.boutiques`"
    )


def test_descriptor_does_not_depend_on_the_machine(monkeypatch):
    """--nprocs defaults to os.cpu_count(); the descriptor must not carry that number."""
    monkeypatch.setattr("os.cpu_count", lambda: 97)
    assert dumps(generate_descriptor()) == DESCRIPTOR_PATH.read_text()


def test_every_parser_argument_is_an_input():
    descriptor = generate_descriptor()
    inputs = {entry["id"]: entry for entry in descriptor["inputs"]}
    parser = build_parser()
    ids = {input_id(a) for a in parser._actions if a.dest not in ("help", "version")}
    assert set(inputs) == ids
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
    assert inputs["method"]["default-value"] == ["auto"]
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
    opts = build_parser().parse_args(_simulate(bosh, invocation, tmp_path))
    assert opts.bids_dir == DEMO
    assert opts.analysis_level == "participant"
    assert opts.participant_label == ["01", "02"]
    assert opts.scale == [1.0, 1.0, 2.0]
    assert opts.method == ["linear"]
    assert opts.skip_bids_validation is True
    assert opts.mem_gb == 2.5 and opts.nprocs == 2
    assert opts.work_dir == tmp_path / "work"


# --- invocations a platform writes: the minimal one, and one per input ------------------------

def _simulate(bosh: str, invocation: dict, tmp_path: Path, name: str = "inv") -> list[str]:
    """Render ``invocation`` with `bosh exec simulate`; return its argv (without the program)."""
    inv_file = tmp_path / f"{name}.json"
    inv_file.write_text(json.dumps(invocation))
    result = subprocess.run(
        [bosh, "exec", "simulate", str(DESCRIPTOR_PATH), "-i", str(inv_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{name}: " + result.stdout[-2000:] + result.stderr[-2000:]
    command = next(line for line in result.stdout.splitlines() if line.startswith("bids_sr "))
    return shlex.split(command)[1:]


def _minimal(tmp_path: Path) -> dict:
    """What a platform sends when the user fills in only the required inputs and a label."""
    return {
        "bids_dir": str(DEMO),
        "output_dir": str(tmp_path / "out"),
        "analysis_level": "participant",
        "participant_label": ["01"],
    }


def _comparable(config) -> dict:
    """A Config as a dict, without the per-run identifier."""
    data = config.to_dict()
    data["execution"].pop("run_uuid")
    return data


def _intended(tmp_path: Path, **changes) -> dict:
    """The Config of the minimal command line (typed by hand), with ``section__field`` changes."""
    from bids_sr.cli.parser import parse_args

    config = parse_args([str(DEMO), str(tmp_path / "out"), "participant",
                         "--participant-label", "01"])  # fmt: skip
    for key, value in changes.items():
        section, name = key.split("__")
        assert hasattr(getattr(config, section), name), key
        setattr(getattr(config, section), name, value)
    return _comparable(config)


def _cases(tmp_path: Path) -> dict[str, tuple[dict, dict]]:
    """Per descriptor input: (the invocation's entries, the Config fields they must set)."""
    filters = tmp_path / "filters.json"
    filters.write_text(json.dumps({"t1w": {"acq": "mprage"}}))
    plugin_file = tmp_path / "plugin.yml"
    plugin_file.write_text("plugin: Linear\nplugin_args:\n  raise_insufficient: false\n")
    weights = REPO / "bids_sr" / "data" / "weights" / "srrecnn_x2x2x2.safetensors"
    evaluate = {"evaluate": True, "degradation": "slice"}
    evaluated = {"workflow__evaluate": True, "workflow__scale": [2.0]}
    return {
        "analysis_level": ({"analysis_level": "group"}, {"execution__analysis_level": "group"}),
        "participant_label": ({"participant_label": ["01", "sub-02"]},
                              {"execution__participant_label": ["01", "sub-02"]}),
        "session_label": ({"session_label": ["1"]}, {"execution__session_label": ["1"]}),
        "bids_filter_file": ({"bids_filter_file": str(filters)},
                             {"execution__bids_filters": {"t1w": {"acq": "mprage"}}}),
        "skip_bids_validation": ({"skip_bids_validation": True},
                                 {"execution__skip_bids_validation": True}),
        "bids_database_dir": ({"bids_database_dir": str(tmp_path / "db")},
                              {"execution__bids_database_dir": tmp_path / "db"}),
        "method": ({"method": ["linear", "bspline"]},
                   {"workflow__methods": ["linear", "bspline"]}),
        "t2w_reference": ({"t2w_reference": "none"}, {"workflow__t2w_reference": "none"}),
        "reference_suffix": ({"reference_suffix": ["FLAIR"]},
                             {"workflow__reference_suffixes": ["FLAIR"]}),
        "fast": ({"fast": True}, {"workflow__fast": True}),
        "reference_session": ({"reference_session": "same"},
                              {"workflow__reference_session": "same"}),
        "scale": ({"scale": [1, 1, 2.5]}, {"workflow__scale": [1.0, 1.0, 2.5]}),
        "output_resolution": ({"output_resolution": 0.5}, {"workflow__output_resolution": 0.5}),
        "weights": ({"weights": str(weights)}, {"workflow__weights": weights}),
        "device": ({"device": "cpu"}, {"workflow__device": "cpu"}),
        "amp": ({"amp": "bf16"}, {"workflow__amp": "bf16"}),
        "tile_size": ({"tile_size": 48}, {"workflow__tile_size": 48}),  # ≥ auto's minimum 42
        "tile_overlap": ({"tile_overlap": 0.25}, {"workflow__tile_overlap": 0.25}),
        "combine_runs": ({"combine_runs": True}, {"workflow__combine_runs": True}),
        "slice_thickness": ({"slice_thickness": 2.5}, {"workflow__slice_thickness": 2.5}),
        "slice_profile": ({"slice_profile": "gaussian"}, {"workflow__slice_profile": "gaussian"}),
        "no_data_consistency": ({"no_data_consistency": True},
                                {"workflow__data_consistency": False}),
        "evaluate": ({"evaluate": True}, evaluated),
        "degradation": ({"degradation": "slice"}, {"workflow__degradation": "slice"}),
        "slice_gap": ({**evaluate, "slice_gap": 0.5},
                      {**evaluated, "workflow__degradation": "slice", "workflow__slice_gap": 0.5}),
        "derivatives": ({"evaluate": True, "derivatives": [str(DEMO)]},
                        {**evaluated, "workflow__derivatives": [DEMO]}),
        "nprocs": ({"nprocs": 1}, {"nipype__nprocs": 1, "nipype__omp_nthreads": 1}),
        "omp_nthreads": ({"omp_nthreads": 1}, {"nipype__omp_nthreads": 1}),
        "mem_gb": ({"mem_gb": 2.5}, {"nipype__mem_gb": 2.5}),
        "plugin": ({"plugin": "Linear"}, {"nipype__plugin": "Linear"}),
        "plugin_config": ({"plugin_config": str(plugin_file)},
                          {"nipype__plugin": "Linear",
                           "nipype__plugin_args": {"raise_insufficient": False}}),
        "work_dir": ({"work_dir": str(tmp_path / "w")}, {"execution__work_dir": tmp_path / "w"}),
        "random_seed": ({"random_seed": 7}, {"seeds__random_seed": 7}),
        "stop_on_first_crash": ({"stop_on_first_crash": True},
                                {"nipype__stop_on_first_crash": True}),
        "resource_monitor": ({"resource_monitor": True}, {"nipype__resource_monitor": True}),
        "verbose": ({"verbose": True}, {"execution__verbose": 1}),
        "progress": ({"progress": True}, {"execution__progress": True}),
    }


def test_bosh_example_succeeds(bosh):
    """`bosh example` fills every default into an invocation; a list input's default must be
    a list (``method``: ["auto"]), else Boutiques rejects it (issue 42)."""
    result = subprocess.run([bosh, "example", str(DESCRIPTOR_PATH)], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    example = json.loads(result.stdout)
    assert {"bids_dir", "output_dir", "analysis_level"} <= set(example)


def test_list_defaults_are_lists():
    inputs = {entry["id"]: entry for entry in generate_descriptor()["inputs"]}
    assert inputs["method"]["default-value"] == ["auto"]
    for entry in inputs.values():
        if entry.get("list") and "default-value" in entry:
            assert isinstance(entry["default-value"], list), entry["id"]


def test_flags_are_named_by_what_they_do():
    """A flag that turns something off is named so: setting it true must not read as 'on'."""
    inputs = {entry["id"]: entry for entry in generate_descriptor()["inputs"]}
    assert "data_consistency" not in inputs
    flag = inputs["no_data_consistency"]
    assert flag["name"] == "No data consistency" and flag["type"] == "Flag"
    assert flag["command-line-flag"] == "--no-data-consistency"
    for entry in inputs.values():
        if entry["type"] == "Flag":
            assert entry["id"] == entry["command-line-flag"].lstrip("-").replace("-", "_")


def test_bosh_minimal_invocation_parses_to_the_default_config(bosh, tmp_path):
    """Only the required inputs and participant_label: bosh renders the defaults, and the
    app's own parser turns the command line into the Config a hand-typed one gives."""
    from bids_sr.cli.parser import parse_args

    argv = _simulate(bosh, _minimal(tmp_path), tmp_path)
    assert _comparable(parse_args(argv)) == _intended(tmp_path)


def test_no_data_consistency_true_renders_the_flag(bosh, tmp_path):
    from bids_sr.cli.parser import parse_args

    argv = _simulate(bosh, {**_minimal(tmp_path), "no_data_consistency": True}, tmp_path)
    assert "--no-data-consistency" in argv
    assert parse_args(argv).workflow.data_consistency is False
    argv = _simulate(bosh, {**_minimal(tmp_path), "no_data_consistency": False}, tmp_path)
    assert "--no-data-consistency" not in argv
    assert parse_args(argv).workflow.data_consistency is True


def test_bosh_one_invocation_per_input_parses_to_the_intended_config(bosh, tmp_path):
    """Every input of the descriptor, set alone on the minimal invocation (with the inputs
    it needs), renders a command line that the app parses into exactly the intended
    Config: the input's own field changes, nothing else."""
    from boutiques import bosh as bosh_api  # in-process: one interpreter for every case

    from bids_sr.cli.parser import parse_args

    cases = _cases(tmp_path)
    ids = {entry["id"] for entry in generate_descriptor()["inputs"]}
    assert ids - {"bids_dir", "output_dir"} == set(cases), "every input needs a case here"
    for name, (entries, changes) in cases.items():
        inv_file = tmp_path / f"{name}.json"
        inv_file.write_text(json.dumps({**_minimal(tmp_path), **entries}))
        rendered = bosh_api(["exec", "simulate", str(DESCRIPTOR_PATH), "-i", str(inv_file)])
        argv = shlex.split(rendered.shell_command)[1:]
        assert _comparable(parse_args(argv)) == _intended(tmp_path, **changes), name


def test_the_generator_prints_its_help_instead_of_writing_a_file_named_help(tmp_path, capsys):
    from bids_sr.cli.boutiques import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0 and "descriptor" in capsys.readouterr().out
    assert main([str(tmp_path / "descriptor.json")]) == 0
    assert json.loads((tmp_path / "descriptor.json").read_text())["name"] == "bids_sr"
