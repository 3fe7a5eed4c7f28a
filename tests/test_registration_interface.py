"""The registration interfaces in a small nipype workflow on the two-contrast phantom."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nipype.pipeline import engine as pe
from test_registration import (
    _true_transform,
    grid_points,
    phantom,
    phantom_pair,
    save_nifti,
    transform_errors,
)

from bids_sr.image import upsampled_affine
from bids_sr.interfaces.registration import RegisterT2wToT1w, ResampleToGrid
from bids_sr.recipes import REGISTRATION_QC, RegistrationQC
from bids_sr.registration import read_itk_transform, sitk_image_from_array


def test_register_then_resample_in_a_workflow(tmp_path):
    (t1, t1_affine), _ = phantom_pair()
    truth = _true_transform(sitk_image_from_array(t1, t1_affine))
    (t1, t1_affine), (t2, t2_affine) = phantom_pair(truth)
    t1_file = save_nifti(t1, t1_affine, tmp_path / "sub-01_T1w.nii.gz")
    t2_file = save_nifti(t2, t2_affine, tmp_path / "sub-01_T2w.nii.gz")
    sr_affine = upsampled_affine(t1_affine, (2, 2, 2))
    sr_shape = tuple(2 * n for n in t1.shape)
    sr_file = save_nifti(np.zeros(sr_shape, np.float32), sr_affine, tmp_path / "sr.nii.gz")

    wf = pe.Workflow(name="reg_wf", base_dir=str(tmp_path / "work"))
    wf.config["execution"]["remove_unnecessary_outputs"] = False  # inspect every output
    register = pe.Node(
        RegisterT2wToT1w(t1w_file=str(t1_file), t2w_file=str(t2_file), initialisation="geometry"),
        name="register",
    )
    resample = pe.Node(
        ResampleToGrid(reference_file=str(sr_file), moving_file=str(t2_file)), name="resample"
    )
    wf.connect(register, "transform_file", resample, "transform_file")
    graph = wf.run(plugin="Linear")
    nodes = {node.name: node for node in graph.nodes()}
    reg = nodes["register"].result.outputs
    out = nodes["resample"].result.outputs

    assert reg.usable and reg.quality >= REGISTRATION_QC.min_nmi
    assert reg.transform_file.endswith(".txt")
    assert reg.summary["RegistrationUsable"] is True
    fixed = sitk_image_from_array(t1, t1_affine)
    _, worst, angle = transform_errors(fixed, read_itk_transform(reg.transform_file), truth)
    assert worst <= 0.5 and angle <= 0.5

    # registered T2w lies on the T1w grid: same shape and affine, so an overlay is trivial
    registered = nib.load(reg.registered_t2w)
    assert registered.shape == t1.shape
    np.testing.assert_allclose(registered.affine, t1_affine, atol=1e-5)

    # the quality check is an input (hashed): a stricter one reruns the node and fails it
    strict = RegistrationQC(min_nmi=1.99)
    register.inputs.qc = strict.fields()
    reg = {node.name: node for node in wf.run(plugin="Linear").nodes()}["register"]
    assert reg.result.outputs.usable is False
    assert reg.result.outputs.summary["RegistrationQualityThreshold"] == 1.99
    assert reg.result.outputs.summary["RegistrationQCSha256"] == strict.sha256

    # resampled T2w lies on the SR grid and shows the T2w-like phantom in T1w space
    resampled = nib.load(out.out_file)
    assert resampled.shape == sr_shape and resampled.get_data_dtype() == np.float32
    np.testing.assert_allclose(resampled.affine, sr_affine, atol=1e-5)
    data = np.asarray(resampled.dataobj)
    points = grid_points(sr_shape, sr_affine)
    inside = phantom(points, 0).reshape(sr_shape) > 0.2
    expected = phantom(points, 1).reshape(sr_shape)
    assert np.corrcoef(data[inside], expected[inside])[0, 1] > 0.95
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() >= 1
