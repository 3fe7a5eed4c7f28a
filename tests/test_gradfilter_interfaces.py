"""The gradfilter Nipype interfaces in a tiny workflow (Linear plugin) on real NIfTI files."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_sr.degrade import degrade
from bids_sr.gradfilter import load_filters
from bids_sr.image import upsampled_affine
from bids_sr.interfaces.gradfilter import ApplyGradientFilters, LearnGradientFilters
from tests.test_gradfilter import ellipsoid_phantom


def write(path, data, zooms):
    affine = np.diag(list(zooms) + [1.0])
    affine[:3, 3] = [-10.0, 20.0, 5.0]
    nib.save(nib.Nifti1Image((data * 1000).astype(np.int16), affine), str(path))
    return str(path)


def test_learn_then_apply_in_workflow(tmp_path):
    hr_files = [write(tmp_path / f"sub-0{i}_T1w.nii.gz", ellipsoid_phantom(i), (1, 1, 1))
                for i in range(3)]
    lr = degrade(ellipsoid_phantom(7), (2, 2, 2))
    lr_file = write(tmp_path / "sub-09_T1w.nii.gz", lr, (2, 2, 2))

    wf = pe.Workflow(name="gradfilter_wf", base_dir=str(tmp_path / "work"))
    inputnode = pe.Node(IdentityInterface(fields=["hr_files", "lr_file"]), name="inputnode")
    inputnode.inputs.hr_files = hr_files
    inputnode.inputs.lr_file = lr_file
    learn = pe.Node(LearnGradientFilters(factor=[2.0], patch_size=5, stride=2,
                                         out_filters="gradfilter_x2x2x2.safetensors"),
                    name="learn")
    apply = pe.Node(ApplyGradientFilters(scale=[2.0], device="cpu"), name="apply")
    outputnode = pe.Node(IdentityInterface(fields=["card"]), name="outputnode")
    wf.connect([
        (learn, outputnode, [("out_card", "card")]),
        (inputnode, learn, [("hr_files", "in_files")]),
        (inputnode, apply, [("lr_file", "in_file")]),
        (learn, apply, [("out_filters", "filters")]),
    ])
    result = wf.run(plugin="Linear")
    nodes = {node.name: node for node in result.nodes()}
    learned = nodes["learn"].result.outputs
    applied = nodes["apply"].result.outputs

    filterset = load_filters(learned.out_filters)
    assert filterset.factors == (2.0, 2.0, 2.0) and filterset.info["training_images"] == 3
    card = json.loads(open(learned.out_card).read())
    assert len(card["training_files"]) == 3 and card["interface"] == "LearnGradientFilters"

    out = nib.load(applied.out_file)
    assert out.shape == (32, 32, 32)
    lr_img = nib.load(lr_file)
    np.testing.assert_allclose(out.affine, upsampled_affine(lr_img.affine, (2, 2, 2)))
    report = json.loads(open(applied.report_json).read())
    assert report["method"] == "gradfilter"
    assert report["filters"] == learned.out_filters
    assert report["buckets_used"] > 0
    # restored to the input's intensity scale (stored as int16 ×1000)
    assert 50 < np.percentile(np.asarray(out.dataobj), 99) < 1200
