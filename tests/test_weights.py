"""safetensors weights + model cards: round trip, checksum, and clear errors for bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from bids_sr.cards.paths import card_path
from bids_sr.models import registry
from bids_sr.models.weights import WeightsError, load_model, save_weights, sha256sum


@pytest.fixture
def small_espcn(tmp_path):
    torch.manual_seed(0)
    spec = registry.get_spec("espcn")
    config = {"factors": [2, 2, 2], "features": [8, 16]}
    model = spec.build(config)
    path = save_weights(
        model,
        tmp_path / "espcn_x2x2x2.safetensors",
        method="espcn",
        config=config,
        factors=(2.0, 2.0, 2.0),
        card={"data": "synthetic test fixture", "licence": "Apache-2.0", "scores": {"psnr": 0}},
    )
    return model, path


def test_round_trip_rebuilds_the_same_network(small_espcn):
    model, path = small_espcn
    loaded, info = load_model(path, method="espcn", factors=(2, 2, 2))
    x = torch.rand(1, 1, 5, 6, 7)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x))
    assert info["method"] == "espcn" and info["factors"] == [2.0, 2.0, 2.0]
    assert info["config"]["features"] == [8, 16]
    assert info["sha256"] == sha256sum(path)
    assert not loaded.training


def test_card_contents(small_espcn):
    model, path = small_espcn
    card = json.loads(card_path(path).read_text())
    assert card_path(path).name == "espcn_x2x2x2.card.json"
    assert card["sha256"] == sha256sum(path)
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["architecture"] == "ESPCN3D" and card["factors"] == [2, 2, 2]
    assert card["data"] == "synthetic test fixture" and card["licence"] == "Apache-2.0"
    assert not list(path.parent.glob(".*tmp"))  # atomic writes leave no temporaries


def test_buffers_are_saved(tmp_path):
    """BatchNorm running statistics travel with the weights (SRGAN)."""
    model = registry.get_spec("srgan").build({"factors": [2, 2, 2], "nb": 1})
    with torch.no_grad():
        model.head[1].running_mean.fill_(0.5)
    path = save_weights(
        model,
        tmp_path / "g.safetensors",
        method="srgan",
        config={"factors": [2, 2, 2], "nb": 1},
        factors=(2, 2, 2),
        card={},
    )
    loaded, _ = load_model(path)
    assert torch.all(loaded.head[1].running_mean == 0.5)


def test_checksum_mismatch_is_reported(small_espcn):
    _, path = small_espcn
    cpath = card_path(path)
    card = json.loads(cpath.read_text())
    card["sha256"] = "0" * 64
    cpath.write_text(json.dumps(card))
    with pytest.raises(WeightsError, match=r"espcn_x2x2x2\.safetensors: sha256 .* model card"):
        load_model(path)


def test_truncated_file(small_espcn):
    _, path = small_espcn
    card_path(path).unlink()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=str(path.name)):
        load_model(path)


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="bad.safetensors: not a readable safetensors"):
        load_model(bad)
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "absent.safetensors")


def test_file_without_our_metadata(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match="plain.safetensors: safetensors file without bids_sr"):
        load_model(path)


def test_wrong_method_and_factors(small_espcn):
    _, path = small_espcn
    with pytest.raises(WeightsError, match="for method 'espcn', not 'fsrcnn'"):
        load_model(path, method="fsrcnn")
    with pytest.raises(WeightsError, match=r"trained for ×2x2x2 but ×4x4x4 was requested"):
        load_model(path, factors=(4, 4, 4))


def test_hr_grid_networks_accept_any_factor(tmp_path):
    model = registry.get_spec("srrecnn").build({"layers": 3, "features": 4})
    path = save_weights(
        model,
        tmp_path / "s.safetensors",
        method="srrecnn",
        config={"layers": 3, "features": 4},
        factors=(2, 2, 2),
        card={},
    )
    _, info = load_model(path, method="srrecnn", factors=(1.5, 1.5, 3.0))
    assert info["factors"] == [2.0, 2.0, 2.0]


def test_tensor_shape_mismatch_names_the_tensor(tmp_path):
    model = registry.get_spec("srrecnn").build({"layers": 3, "features": 4})
    path = save_weights(
        model,
        tmp_path / "s.safetensors",
        method="srrecnn",
        config={"layers": 3, "features": 8},
        factors=(2, 2, 2),
        card={},
    )
    with pytest.raises(WeightsError, match=r"s.safetensors: tensors do not fit .*shape mismatch"):
        load_model(path)
