"""DeepSuperResolve composed in a small Nipype workflow of our own, run with Linear."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from traits.api import TraitError

from bids_sr.image import upsampled_affine
from bids_sr.interfaces.deep import DeepSuperResolve
from bids_sr.models import registry
from bids_sr.models.weights import save_weights

torch.set_num_threads(1)


def make_image(out_dir: str) -> str:
    """Write a small blob-like T1w with an oblique, anisotropic scanner affine."""
    import os

    import nibabel as nib
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.random((14, 12, 10)), 1.5) * 800 + 100
    angle = np.deg2rad(12)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([1.1, 1.2, 2.4])
    affine[:3, 3] = [-80.0, -110.0, -60.0]
    path = os.path.join(out_dir, "sub-01_T1w.nii.gz")
    img = nib.Nifti1Image(data.astype(np.float32), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, path)
    return path


@pytest.fixture
def srrecnn_weights(tmp_path):
    torch.manual_seed(0)
    config = {"layers": 3, "features": 8}
    model = registry.get_spec("srrecnn").build(config)
    return save_weights(
        model,
        tmp_path / "w" / "srrecnn_test.safetensors",
        method="srrecnn",
        config=config,
        factors=(2, 2, 2),
        card={"data": "untrained fixture"},
    )


def test_workflow_runs_deep_super_resolve(tmp_path, srrecnn_weights):
    source = pe.Node(
        niu.Function(input_names=["out_dir"], output_names=["path"], function=make_image),
        name="make_image",
    )
    source.inputs.out_dir = str(tmp_path)
    sr = pe.Node(
        DeepSuperResolve(
            method="srrecnn",
            scale=[1.0, 1.0, 2.0],
            device="cpu",
            weights=str(srrecnn_weights),
            tile_size=12,
        ),
        name="deep_sr",
    )
    wf = pe.Workflow(name="deep_wf", base_dir=str(tmp_path / "work"))
    wf.connect(source, "path", sr, "in_file")
    graph = wf.run(plugin="Linear")
    node = next(n for n in graph.nodes() if n.name == "deep_sr")
    out_file = node.result.outputs.out_file
    report = json.loads(open(node.result.outputs.report_json).read())

    lr = nib.load(tmp_path / "sub-01_T1w.nii.gz")
    hr = nib.load(out_file)
    assert hr.shape == (14, 12, 20)
    np.testing.assert_allclose(hr.affine, upsampled_affine(lr.affine, (1, 1, 2)), atol=1e-5)
    assert np.allclose(hr.header.get_zooms(), (1.1, 1.2, 1.2), atol=1e-4)
    # intensities restored to the input's scale
    assert abs(float(np.mean(hr.get_fdata())) - float(np.mean(lr.get_fdata()))) < 50
    assert report["method"] == "srrecnn" and report["device"] == "cpu"
    assert report["tiles"] > 1 and report["tile_size"] == 12
    assert report["weights_sha256"] and report["fell_back_to_cpu"] is False
    assert report["factors"] == [1.0, 1.0, 2.0]


def test_method_is_restricted_to_networks():
    with pytest.raises(TraitError):
        DeepSuperResolve(method="bspline")
    assert DeepSuperResolve().inputs.method in registry.list_methods()
    import bids_sr.interfaces.deep as deep

    assert "Example" in deep.__doc__ and "DeepSuperResolve(method=" in deep.__doc__


def test_guided_network_through_interface(tmp_path):
    torch.manual_seed(1)
    config = {"layers": 3, "features": 8, "in_channels": 2}
    model = registry.get_spec("srrecnn-t2w").build(config)
    weights = save_weights(
        model,
        tmp_path / "g.safetensors",
        method="srrecnn-t2w",
        config=config,
        factors=(2, 2, 2),
        card={},
    )
    t1 = make_image(str(tmp_path))
    lr = nib.load(t1)
    ref_affine = upsampled_affine(lr.affine, (2, 2, 2))
    ref = nib.Nifti1Image(
        np.random.default_rng(2).random((28, 24, 20)).astype(np.float32) * 500, ref_affine
    )
    nib.save(ref, tmp_path / "t2w.nii.gz")
    iface = DeepSuperResolve(
        method="srrecnn-t2w",
        scale=[2.0],
        device="cpu",
        in_file=t1,
        reference_file=str(tmp_path / "t2w.nii.gz"),
        weights=str(weights),
    )
    (tmp_path / "run").mkdir()
    result = iface.run(cwd=str(tmp_path / "run"))
    assert nib.load(result.outputs.out_file).shape == (28, 24, 20)
