"""T2w selection by BIDS entities and the reference workflow on the demo dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import DEMO

from bids_sr.bids import load_layout, select_reference
from bids_sr.errors import BIDSError
from bids_sr.image import upsampled_affine


def _touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), path)


@pytest.fixture
def sessions_dataset(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    description = {"Name": "t", "BIDSVersion": "1.9.0"}
    (root / "dataset_description.json").write_text(json.dumps(description))
    for rel in [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz",
        "sub-01/ses-4/anat/sub-01_ses-4_T1w.nii.gz",
        "sub-01/ses-5/anat/sub-01_ses-5_T2w.nii.gz",
        "sub-02/anat/sub-02_T1w.nii.gz",
    ]:
        _touch_image(root / rel)
    return root


def test_t2w_same_session_then_closest(sessions_dataset):
    layout = load_layout(sessions_dataset, ["01", "02"], validate=False)
    t1w = {p.name: str(p) for p in sessions_dataset.rglob("*_T1w.nii.gz")}
    pick = lambda name: Path(select_reference(layout, t1w[name], "T2w")).name  # noqa: E731
    assert pick("sub-01_ses-1_T1w.nii.gz") == "sub-01_ses-1_T2w.nii.gz"
    assert pick("sub-01_ses-2_T1w.nii.gz") == "sub-01_ses-1_T2w.nii.gz"
    assert pick("sub-01_ses-4_T1w.nii.gz") == "sub-01_ses-5_T2w.nii.gz"
    assert select_reference(layout, t1w["sub-02_T1w.nii.gz"], "T2w") is None
    assert select_reference(layout, t1w["sub-01_ses-1_T1w.nii.gz"], "T2w", "none") is None


def test_t2w_pattern(sessions_dataset, tmp_path):
    layout = load_layout(sessions_dataset, ["01"], validate=False)
    t1w = str(sessions_dataset / "sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz")
    ref = tmp_path / "refs" / "sub-01_ses-2_T2w.nii.gz"
    _touch_image(ref)
    pattern = str(tmp_path / "refs" / "sub-{subject}_ses-{session}_T2w.nii.gz")
    assert select_reference(layout, t1w, "T2w", pattern) == str(ref)
    with pytest.raises(BIDSError, match="does not exist"):
        select_reference(layout, t1w, "T2w", str(tmp_path / "missing_{subject}.nii.gz"))


def test_reference_workflow_on_demo(tmp_path):
    from bids_sr.workflows.reference import init_reference_wf

    wf = init_reference_wf(scale=[2.0])
    wf.base_dir = str(tmp_path)
    t1w = DEMO / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    wf.inputs.inputnode.t1w = str(t1w)
    wf.inputs.inputnode.reference = str(DEMO / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    graph = wf.run(plugin="Linear")
    nodes = {node.name: node for node in graph.nodes()}
    register = nodes["register"].result.outputs
    # the synthetic T2w is in the T1w's space: registration stays near identity, and is usable
    assert register.usable
    assert register.summary["RegistrationRotationDegrees"] < 1.0
    assert register.summary["RegistrationTranslationMM"] < 1.0
    on_grid = nib.load(nodes["resample_to_sr_grid"].result.outputs.out_file)
    src = nib.load(t1w)
    assert on_grid.shape == tuple(2 * n for n in src.shape)
    np.testing.assert_allclose(on_grid.affine, upsampled_affine(src.affine, (2, 2, 2)), atol=1e-4)
    assert Path(register.transform_file).read_text().startswith("#Insight Transform File")
