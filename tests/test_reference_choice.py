"""Which reference guides a T1w: a T2w or a FLAIR (issue 14, item 3).

``auto`` picks, among the session's T2w and FLAIR, the finest along the SR axes for which a
guided model's card shows a gain (a tie: T2w); ``--reference-suffix`` forces the contrasts;
the guided method of the other contrast never gets the reference; the sidecar names the
reference used. Planning never loads weights: the cards here sit beside empty files.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_sr.bids import load_layout
from bids_sr.config import Config, Execution, Workflow
from bids_sr.errors import EXIT_MISSING, BIDSError
from bids_sr.planning.plan import plan_methods


def _card(folder: Path, stem: str, method: str, suffix: str | None, over_mono=None) -> None:
    (folder / f"{stem}.safetensors").write_bytes(b"")
    record = {"family": "slice", "factors": [1, 1, 3], "data_consistency": True,
              "gain_over_bspline": {"a": 2.0 if suffix else 0.5}}  # fmt: skip
    if over_mono is not None:
        record["gain_over_mono"] = over_mono
    card = {"method": method, "needs_t2w": suffix == "T2w", "reference_suffix": suffix,
            "evidence": [record]}  # fmt: skip
    (folder / f"{stem}.card.json").write_text(json.dumps(card))


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    from bids_sr.cards import paths as card_paths

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(card_paths, "WEIGHTS_DIR", folder)
    _card(folder, "srrecnn_x1x1x3", "srrecnn", None)
    _card(folder, "srrecnn-t2w_x1x1x3", "srrecnn-t2w", "T2w", over_mono={"a": 1.2})
    _card(folder, "srrecnn-flair_x1x1x3", "srrecnn-flair", "FLAIR", over_mono={"a": 1.1})
    return folder


def _image(path: Path, zooms, shape=(12, 12, 12)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.diag([*zooms, 1.0])), path)
    return str(path)


@pytest.fixture
def thick(tmp_path):
    return _image(tmp_path / "sub-01_T1w.nii.gz", (1, 1, 3))


def _plan(t1w: str, candidates: dict, methods=("auto",), **workflow):
    config = Config(execution=Execution(bids_dir=Path("."), output_dir=Path("out")),
                    workflow=Workflow(methods=list(methods), output_resolution=1.0, **workflow))
    return plan_methods(config, {"01": [t1w]}, {t1w: candidates})


def test_auto_guides_with_the_only_reference_of_either_contrast(tmp_path, weights_dir, thick):
    t2w = _image(tmp_path / "sub-01_T2w.nii.gz", (1, 1, 1))
    flair = _image(tmp_path / "sub-01_FLAIR.nii.gz", (1, 1, 1))
    plan = _plan(thick, {"T2w": t2w})
    assert plan.methods[thick] == ["srrecnn-t2w"] and plan.reference_files[thick] == t2w
    assert plan.reference_suffix(thick) == "T2w"
    plan = _plan(thick, {"FLAIR": flair})
    assert plan.methods[thick] == ["srrecnn-flair"] and plan.reference_files[thick] == flair
    assert plan.reference_suffix(thick) == "FLAIR"
    flair_weights = weights_dir / "srrecnn-flair_x1x1x3.safetensors"
    assert plan.weights_for(thick, "srrecnn-flair") == flair_weights
    assert "(FLAIR-guided by sub-01_FLAIR.nii.gz)" in plan.choices[thick]
    assert "+1.10 dB over the mono model" in plan.choices[thick]
    assert plan.fallback(thick, "srrecnn-flair").method == "srrecnn"


def test_auto_takes_the_finest_reference_and_t2w_on_a_tie(tmp_path, weights_dir, thick):
    flair_3d = _image(tmp_path / "sub-01_FLAIR.nii.gz", (1, 1, 1))
    t2w_3d = _image(tmp_path / "sub-01_T2w.nii.gz", (1, 1, 1))
    t2w_2mm = _image(tmp_path / "sub-01_acq-2mm_T2w.nii.gz", (0.5, 0.5, 2.0))  # finer than 3
    plan = _plan(thick, {"T2w": t2w_2mm, "FLAIR": flair_3d})
    assert plan.methods[thick] == ["srrecnn-flair"] and plan.reference_files[thick] == flair_3d
    assert "the T2w sub-01_acq-2mm_T2w.nii.gz is not used: the FLAIR" in plan.choices[thick]
    plan = _plan(thick, {"T2w": t2w_3d, "FLAIR": flair_3d})
    assert plan.methods[thick] == ["srrecnn-t2w"] and plan.reference_files[thick] == t2w_3d
    # a T2w that is not finer than the T1w along the slice axis does not count
    t2w_thick = _image(tmp_path / "sub-01_acq-thick_T2w.nii.gz", (0.5, 0.5, 3.0))
    plan = _plan(thick, {"T2w": t2w_thick, "FLAIR": _image(
        tmp_path / "sub-01_acq-2mm_FLAIR.nii.gz", (1, 1, 2))})  # fmt: skip
    assert plan.methods[thick] == ["srrecnn-flair"]
    assert "acq-thick_T2w.nii.gz is not used: it is not finer" in plan.choices[thick]


def test_auto_needs_evidence_for_the_reference_contrast(tmp_path, weights_dir, thick):
    """The finest reference guides only when a card of its contrast shows the gain."""
    (weights_dir / "srrecnn-flair_x1x1x3.card.json").unlink()
    flair_3d = _image(tmp_path / "sub-01_FLAIR.nii.gz", (1, 1, 1))
    t2w_2mm = _image(tmp_path / "sub-01_T2w.nii.gz", (0.5, 0.5, 2.0))
    plan = _plan(thick, {"T2w": t2w_2mm, "FLAIR": flair_3d})
    assert plan.methods[thick] == ["srrecnn-t2w"] and plan.reference_suffix(thick) == "T2w"
    plan = _plan(thick, {"FLAIR": flair_3d})
    assert plan.methods[thick] == ["srrecnn"] and thick not in plan.reference_files


def test_named_guided_methods_take_their_own_contrast(tmp_path, weights_dir, thick, caplog):
    t2w = _image(tmp_path / "sub-01_T2w.nii.gz", (1, 1, 1))
    flair = _image(tmp_path / "sub-01_FLAIR.nii.gz", (1, 1, 1))
    both = {"T2w": t2w, "FLAIR": flair}
    plan = _plan(thick, both, methods=["srrecnn-flair"])
    assert plan.reference_files[thick] == flair and plan.guides(thick, "srrecnn-flair")
    assert not plan.guides(thick, "srrecnn-t2w")
    # one reference per T1w: the first guided method named gets it, the other falls back
    plan = _plan(thick, both, methods=["srrecnn-t2w", "srrecnn-flair"])
    assert plan.reference_files[thick] == t2w and not plan.guides(thick, "srrecnn-flair")
    assert "no FLAIR reference" in caplog.text
    # all: the guided methods of the finest reference's contrast only (a tie: T2w)
    plan = _plan(thick, both, methods=["all"])
    assert "srrecnn-t2w" in plan.methods[thick] and "srrecnn-flair" not in plan.methods[thick]
    plan = _plan(thick, {"FLAIR": flair}, methods=["all"])
    assert "srrecnn-flair" in plan.methods[thick] and "srrecnn-t2w" not in plan.methods[thick]


def _dataset(root: Path, suffixes) -> Path:
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "refs", "BIDSVersion": "1.9.0"}))
    _image(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz", (1, 1, 3))
    for suffix in suffixes:
        _image(root / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz", (1, 1, 1))
    return root


def _find(root: Path, **workflow) -> dict:
    from bids_sr.planning.references import find_references

    config = Config(execution=Execution(bids_dir=root, output_dir=root.parent / "out"),
                    workflow=Workflow(methods=["auto"], **workflow))  # fmt: skip
    layout = load_layout(root, ["01"], validate=False)
    t1w = str(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    return find_references(layout, config, {"01": [t1w]}).get(t1w, {})


def test_the_dataset_query_finds_both_and_a_forced_suffix_keeps_one(tmp_path, weights_dir):
    root = _dataset(tmp_path / "both", ["T2w", "FLAIR"])
    assert set(_find(root)) == {"T2w", "FLAIR"}
    assert set(_find(root, reference_suffixes=["FLAIR"])) == {"FLAIR"}
    assert set(_find(root, t2w_reference="none")) == {"FLAIR"}
    # forced FLAIR guides with the FLAIR although the T2w is as fine (it would win the tie)
    t1w = str(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    plan = _plan(t1w, _find(root, reference_suffixes=["FLAIR"]))
    assert plan.methods[t1w] == ["srrecnn-flair"]


def test_a_forced_reference_that_is_missing_stops_the_run(tmp_path, weights_dir, capsys):
    root = _dataset(tmp_path / "t2w_only", ["T2w"])
    with pytest.raises(BIDSError, match=r"sub-01_T1w.nii.gz: no FLAIR of this participant to "
                                        r"guide it \(--reference-suffix FLAIR\)") as info:
        _find(root, reference_suffixes=["FLAIR"])
    assert info.value.code == EXIT_MISSING and "\n" not in str(info.value)
    assert _find(root, reference_suffixes=["T2w", "FLAIR"]).keys() == {"T2w"}
    # the same through the command line: one line, exit 66, nothing written
    from bids_sr.cli.run import main

    out = tmp_path / "out"
    code = main([str(root), str(out), "participant", "--reference-suffix", "FLAIR",
                 "--output-resolution", "1", "--skip-bids-validation", "-w", str(tmp_path / "w")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_MISSING
    assert any("no FLAIR of this participant to guide it" in line for line in err), err
    assert not list(out.glob("sub-01/**/*.nii.gz"))


def test_reference_suffix_t2w_with_t2w_reference_none_is_a_usage_error(tmp_path, capsys):
    from bids_sr.cli.parser import parse_args
    from bids_sr.errors import EXIT_USAGE

    root = _dataset(tmp_path / "ds", ["T2w"])
    with pytest.raises(SystemExit) as info:
        parse_args([str(root), str(tmp_path / "out"), "participant", "--reference-suffix",
                    "T2w", "--t2w-reference", "none"])
    assert info.value.code == EXIT_USAGE
    assert "--reference-suffix T2w and --t2w-reference none exclude each other" in (
        capsys.readouterr().err
    )


def test_the_sidecar_and_transform_name_the_flair(tmp_path, weights_dir, thick):
    """The workflow registers the FLAIR, writes ``from-FLAIR_to-T1w`` and records the file
    and its suffix in the guided output's sidecar (read from the built graph)."""
    from bids_sr.workflows.base import init_single_subject_wf

    flair = _image(tmp_path / "sub-01_FLAIR.nii.gz", (1, 1, 1))
    plan = _plan(thick, {"FLAIR": flair}, methods=["srrecnn-flair"])
    config = Config(execution=Execution(bids_dir=tmp_path, output_dir=tmp_path / "out"),
                    workflow=Workflow(methods=["srrecnn-flair"], output_resolution=1.0))
    wf = init_single_subject_wf(subject_id="01", t1w_files=[thick], config=config, plan=plan)
    names = wf.list_node_names()
    sink = next(wf.get_node(n) for n in names if n.startswith("ds_") and "srrecnn" in n
                and n.endswith(".ds_sr"))  # fmt: skip
    assert sink is not None
    meta = sink.inputs.extra_metadata
    assert meta["FLAIRReference"].endswith("sub-01_FLAIR.nii.gz")
    assert meta["ReferenceSuffix"] == "FLAIR" and "T2wReference" not in meta
    xfm = next(wf.get_node(n) for n in names if n.startswith("ds_xfm") and n.endswith("ds_xfm"))
    assert "from-FLAIR_to-T1w" in xfm.inputs.out_path
    # the guided − mono map beside it names the FLAIR too
    minus = next(wf.get_node(n) for n in names if n.endswith(".ds_guided_minus_mono"))
    assert minus.inputs.desc == "srrecnnFlairGuidedMinusMono"
    assert minus.inputs.extra_metadata["FLAIRReference"] == meta["FLAIRReference"]
    assert minus.inputs.extra_metadata["ReferenceSuffix"] == "FLAIR"
    assert "T2w" not in minus.inputs.extra_metadata["Description"]
    assert any(n.startswith("reference_") for n in names)  # the reference workflow
