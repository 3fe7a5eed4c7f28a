"""bids_sr in a user's Nipype pipeline: SuperResolve and init_anat_sr_wf default to ``auto``
(as the command line) and decide when they run, from the same evidence as the command line;
no file is read while a graph is built; the public interfaces and workflows are exported."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nipype.interfaces import io as nio
from nipype.interfaces.base import isdefined

from bids_sr.interfaces.superresolve import SuperResolve
from bids_sr.workflows.anatomical import SuperResolveMemory, estimate_mem_gb, init_anat_sr_wf

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "bids_sr" / "data" / "demo"
EXAMPLE = REPO / "examples" / "nipype_pipeline.py"


def _example():
    spec = importlib.util.spec_from_file_location("nipype_pipeline_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _small_t1w(path: Path) -> Path:
    """A 24³ isotropic 1 mm head-like image (a bright ball in a dark background)."""
    grid = np.indices((24, 24, 24)).astype(np.float32) - 11.5
    data = np.where((grid**2).sum(0) < 81, 100.0, 5.0).astype(np.float32)
    data += np.random.default_rng(0).normal(0, 1, data.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 1.0, 1.0])), path)
    return path


def test_superresolve_defaults_to_auto_like_the_command_line():
    from bids_sr.cli.parser import parse_args

    assert SuperResolve().inputs.method == "auto"
    assert parse_args(["/d", "/o", "participant"]).workflow.methods == ["auto"]
    assert SuperResolve(method="auto").inputs.method == "auto"  # no TraitError
    wf = init_anat_sr_wf()
    assert wf.get_node("super_resolve").inputs.method == "auto"


def test_building_reads_no_file(tmp_path, monkeypatch):
    """A T1w known only at run time: building init_anat_sr_wf and the example pipeline
    (DataGrabber → auto → user's node → DataSink) opens no image."""
    def forbidden(*args, **kwargs):
        raise AssertionError(f"a file was read while building: {args}")

    monkeypatch.setattr(nib, "load", forbidden)
    wf = init_anat_sr_wf(method="auto", scale=[2.0])
    wf.inputs.inputnode.t1w = "<set at runtime>"
    assert wf.get_node("super_resolve").mem_gb > 0
    pipeline = _example().build_pipeline(DEMO, tmp_path / "out", ["01", "02"],
                                         tmp_path / "work")  # fmt: skip
    names = pipeline.list_node_names()
    assert "grab" in names and "sink" in names and "anat_sr_wf.super_resolve" in names
    assert isinstance(pipeline.get_node("grab").interface, nio.DataGrabber)


def test_memory_comes_from_the_header_when_the_node_runs(tmp_path):
    t1w = _small_t1w(tmp_path / "sub-01_T1w.nii.gz")
    wf = init_anat_sr_wf(scale=[3.0])
    node = wf.get_node("super_resolve")
    assert isinstance(node.ram_estimator, SuperResolveMemory)
    node.inputs.in_file = str(t1w)
    assert node.mem_gb_runtime == estimate_mem_gb(str(t1w), [3.0], None)
    hinted = init_anat_sr_wf(scale=[3.0], mem_gb=6.5).get_node("super_resolve")
    assert hinted.mem_gb == 6.5 and hinted.ram_estimator is None


def test_auto_decides_when_the_node_runs_and_says_why(tmp_path, monkeypatch):
    """An isotropic input at ×3: no card validates a learned method there, so auto runs
    bspline; outputs and report say what ran, why, and that auto was asked for."""
    monkeypatch.chdir(tmp_path)
    t1w = _small_t1w(tmp_path / "sub-07_acq-iso_T1w.nii.gz")
    result = SuperResolve(in_file=str(t1w), scale=[3.0]).run()
    outputs = result.outputs
    assert outputs.method == "bspline"
    assert outputs.method_choice.startswith("auto chose bspline")
    assert "isotropic inputs at ×3x3x3" in outputs.method_choice
    assert Path(outputs.out_file).name == "sub-07_acq-iso_T1w_sr.nii.gz"
    report = json.loads(Path(outputs.report_json).read_text())
    assert report["requested_method"] == "auto" and report["method"] == "bspline"
    assert report["method_choice"] == outputs.method_choice
    assert nib.load(outputs.out_file).shape == (72, 72, 72)
    named = SuperResolve(in_file=str(t1w), scale=[3.0], method="linear").run().outputs
    assert named.method == "linear" and "named" in named.method_choice
    assert not isdefined(named.uncertainty_file)


def test_auto_decides_as_the_command_line_on_every_demo_t1w(tmp_path):
    """The node's decision (from the image alone, at run time) and the command line's plan
    (``bids_sr DEMO OUT participant``) pick the same method with the same evidence."""
    from bids_sr.cli.parser import parse_args
    from bids_sr.cli.run import _collect_inputs
    from bids_sr.planning.plan import plan_methods
    from bids_sr.planning.references import find_references

    config = parse_args([str(DEMO), str(tmp_path / "out"), "participant",
                         "--skip-bids-validation"])  # fmt: skip
    layout, t1w_by_subject = _collect_inputs(config)
    references = find_references(layout, config, t1w_by_subject)
    plan = plan_methods(config, t1w_by_subject, references)
    assert len(plan.auto_methods) == 4  # sub-01, sub-02 (two sessions), sub-03
    for t1w_file, cli_method in plan.auto_methods.items():
        node = SuperResolve(in_file=t1w_file)
        choice = node._auto_choice(nib.load(t1w_file).affine)
        assert choice.method == cli_method, t1w_file
        # the evidence sentence is the same; the command line adds why a T2w does not guide
        assert plan.choices[t1w_file].startswith(choice.sentence), t1w_file
    chosen = {Path(f).name: m for f, m in plan.auto_methods.items()}
    assert chosen["sub-03_T1w.nii.gz"] == "selfsr"
    # --fast and the node's ``fast`` input agree too: the cohort mode
    sub03 = next(f for f in plan.auto_methods if f.endswith("sub-03_T1w.nii.gz"))
    fast_node = SuperResolve(in_file=sub03, fast=True)
    assert fast_node._auto_choice(nib.load(sub03).affine).method == "selfsr-fast"


def test_public_interfaces_and_workflows_are_exported_and_documented():
    import bids_sr.interfaces as interfaces
    import bids_sr.workflows as workflows

    assert {"SuperResolve", "DeepSuperResolve", "MonoTwin", "RegisterT2wToT1w",
            "DerivativesDataSink"} <= set(interfaces.__all__)  # fmt: skip
    for name in interfaces.__all__:
        interface = getattr(interfaces, name)
        assert (interface.__doc__ or "").strip(), name
        for spec in (interface.input_spec(), interface.output_spec()):
            for trait_name, trait in spec.traits().items():
                if trait_name.startswith("trait_") or trait_name in ("args", "environ"):
                    continue
                assert trait.desc, f"{name}.{trait_name} has no desc"
    assert {"init_anat_sr_wf", "init_reference_wf", "init_bids_sr_wf"} <= set(
        workflows.__all__
    )
    for name in workflows.__all__:
        factory = getattr(workflows, name)
        doc = factory.__doc__ or ""
        assert doc.strip(), name
    doc = init_anat_sr_wf.__doc__
    assert "Inputs" in doc and "Outputs" in doc and "method_choice" in doc


@pytest.mark.slow
def test_example_pipeline_on_the_demo_chooses_as_the_command_line(tmp_path, run_cli):
    """DataGrabber (the T1w path known only at run time) → init_anat_sr_wf at its default
    (auto) → the user's node → DataSink, run on the demo's sub-01; the method it chose is the
    one the command line writes in the sidecar (Method, MethodChoice)."""
    example = _example()
    out = tmp_path / "pipeline"
    pipeline = example.build_pipeline(DEMO, out, ["01"], tmp_path / "work")
    pipeline.run(plugin="Linear")
    summary = json.loads((out / "sub-01" / "summary.json").read_text())
    assert (out / "sub-01" / "sub-01_T1w_sr.nii.gz").is_file()
    assert summary["shape"] == [168, 204, 168] and summary["voxel_size_mm"] == [1.0, 1.0, 1.0]

    cli_out = tmp_path / "cli"
    code, err = run_cli(DEMO, cli_out, "participant", "--participant-label", "01",
                        "--skip-bids-validation", "-w", tmp_path / "cli_work", "--plugin",
                        "Linear")  # fmt: skip
    assert code == 0, err
    sidecar = json.loads((cli_out / "sub-01" / "anat" /
                          f"sub-01_res-hi_desc-{summary['method']}_T1w.json").read_text())
    assert sidecar["Method"] == summary["method"] == "srrecnn"
    assert sidecar["RequestedMethod"] == "auto"
    assert sidecar["MethodChoice"].startswith(summary["method_choice"])
