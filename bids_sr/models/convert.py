"""Import the originals' published weights into our networks (``bids_sr-convert-weights``).

Users of the original repositories already hold these files; this command turns them into
our safetensors + model card so the app can run them:

* 3D FSRCNN — Keras 2 HDF5 (``.h5``), read with h5py. Layers are listed in the
  ``model_weights`` group's ``layer_names`` attribute, each holding ``<layer>/kernel:0`` and
  ``<layer>/bias:0``. Keras kernels are (k, k, k, in, out) for Conv3D and (k, k, k, out, in)
  for Conv3DTranspose; ``permute(4, 3, 0, 1, 2)`` gives torch's (out, in, k, k, k) and
  (in, out, k, k, k) respectively. The transposed convolution's stride comes from the
  ``model_config`` JSON. The original was trained on intensities 0–255 (image / max × 255),
  recorded as ``input_scale`` 255 so it runs on our ~[0, 1] volumes.
* SRReCNN3D — Caffe ``.caffemodel``: a protobuf ``NetParameter`` parsed here by hand from the
  wire format (no Caffe, no protobuf package). Layers are field 100 (``LayerParameter``:
  name 1, type 2, blobs 7) or, in old files, field 2 (``V1LayerParameter``: name 4, blobs 6).
  A ``BlobProto`` stores floats in field 5 (packed or not) and its shape in field 7
  (``BlobShape.dim``, field 1) or, in old files, num/channels/height/width (fields 1–4).
  Caffe's convolution blobs are already (out, in, k, k, k).

Usage::

    bids_sr-convert-weights fsrcnn_56_16_relu_2.h5 fsrcnn_x2x2x2.safetensors --method fsrcnn
    bids_sr-convert-weights SRReCNN3D_10Layers_IsoScalex2.caffemodel srrecnn_x2x2x2.safetensors \\
        --method srrecnn
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from bids_sr.models.registry import get_spec
from bids_sr.models.weights import save_weights, sha256sum

CONVERTIBLE = ("fsrcnn", "srrecnn", "srrecnn-t2w")


class ConversionError(ValueError):
    """An original weights file that cannot be converted; the message names the file."""


# --------------------------------------------------------------------------- Keras HDF5
def read_keras_h5(path: str | Path) -> tuple[list[tuple[str, list[np.ndarray]]], dict[str, Any]]:
    """(layer name, [kernel, bias]) in model order, and the parsed ``model_config``."""

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ConversionError(f"{path}: not an HDF5 file ({exc})") from exc
    with handle:
        group = handle["model_weights"] if "model_weights" in handle else handle
        names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in group.attrs.get("layer_names", [])
        ]
        if not names:
            raise ConversionError(f"{path}: no Keras 'layer_names' attribute; not a Keras model")
        layers = []
        for name in names:
            weight_names = [
                w.decode() if isinstance(w, bytes) else str(w)
                for w in group[name].attrs.get("weight_names", [])
            ]
            if weight_names:
                layers.append((name, [np.asarray(group[name][w]) for w in weight_names]))
        raw = handle.attrs.get("model_config")
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw) if raw else {}
    return layers, config


def _keras_layer_configs(model_config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    layers = model_config.get("config", {})
    layers = layers.get("layers", []) if isinstance(layers, dict) else layers
    return {
        layer["config"]["name"]: {"class": layer["class_name"], **layer["config"]}
        for layer in layers
    }


def fsrcnn_from_keras(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], list]:
    """State dict and config of our FSRCNN3D from the original Keras file."""
    path = Path(path)
    layers, model_config = read_keras_h5(path)
    configs = _keras_layer_configs(model_config)
    if len(layers) < 5:
        raise ConversionError(f"{path}: {len(layers)} weighted layers; FSRCNN has at least 5")
    kernels = [w[0] for _, w in layers]
    if kernels[0].ndim != 5 or kernels[-1].ndim != 5:
        raise ConversionError(f"{path}: expected 3D convolution kernels (k, k, k, in, out)")
    deconv_name = layers[-1][0]
    strides = configs.get(deconv_name, {}).get("strides", [2, 2, 2])
    d, s = kernels[0].shape[4], kernels[1].shape[4]
    m = len(layers) - 4
    config = {
        "factors": [int(v) for v in strides],
        "d": int(d),
        "s": int(s),
        "m": int(m),
        "deconv_kernel": int(kernels[-1].shape[0]),
        "in_channels": int(kernels[0].shape[3]),
        "input_scale": 255.0,
    }
    body_indices = [2 * i for i in range(len(layers) - 1)]  # conv at even Sequential slots
    state: dict[str, torch.Tensor] = {}
    for index, (_, (kernel, bias)) in zip(body_indices, layers[:-1]):
        state[f"body.{index}.weight"] = torch.from_numpy(kernel).permute(4, 3, 0, 1, 2)
        state[f"body.{index}.bias"] = torch.from_numpy(bias)
    kernel, bias = layers[-1][1]
    state["deconv.weight"] = torch.from_numpy(kernel).permute(4, 3, 0, 1, 2)  # → (in, out, k³)
    state["deconv.bias"] = torch.from_numpy(bias)
    return state, config, strides


# --------------------------------------------------------------------------- protobuf
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ConversionError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def protobuf_fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """Yield (field number, wire type, value) of one protobuf message: varints as int,
    length-delimited fields as bytes, fixed32/fixed64 as raw bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ConversionError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        else:
            raise ConversionError(f"unsupported protobuf wire type {wire}")
        yield number, wire, value


def _packed_varints(value: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(value):
        v, pos = _varint(value, pos)
        out.append(v)
    return out


def parse_blob(buf: bytes) -> np.ndarray:
    """A Caffe BlobProto → float32 array with its shape."""
    data: list[np.ndarray] = []
    shape: list[int] = []
    legacy = {}
    for number, wire, value in protobuf_fields(buf):
        if number == 5 and wire == 2:
            data.append(np.frombuffer(value, dtype="<f4"))
        elif number == 5 and wire == 5:
            data.append(np.asarray(struct.unpack("<f", value), dtype=np.float32))
        elif number == 7 and wire == 2:
            for sub_number, sub_wire, sub_value in protobuf_fields(value):
                if sub_number == 1:
                    shape += _packed_varints(sub_value) if sub_wire == 2 else [sub_value]
        elif number in (1, 2, 3, 4) and wire == 0:
            legacy[number] = value
    flat = np.concatenate(data).astype(np.float32) if data else np.zeros(0, np.float32)
    if not shape and legacy:
        shape = [legacy.get(k, 1) for k in (1, 2, 3, 4)]
    if int(np.prod(shape)) != flat.size:
        raise ConversionError(f"blob of {flat.size} values does not fit shape {shape}")
    return flat.reshape(shape)


def read_caffemodel(path: str | Path) -> list[tuple[str, str, list[np.ndarray]]]:
    """(name, type, blobs) of every layer of a ``.caffemodel``, in file order."""
    path = Path(path)
    buf = path.read_bytes()
    layers = []
    try:
        for number, wire, value in protobuf_fields(buf):
            if wire != 2 or number not in (100, 2):
                continue
            name_field, type_field, blob_field = (1, 2, 7) if number == 100 else (4, 5, 6)
            name, kind, blobs = "", "", []
            for sub_number, sub_wire, sub_value in protobuf_fields(value):
                if sub_number == name_field and sub_wire == 2:
                    name = sub_value.decode("utf-8", "replace")
                elif sub_number == type_field:
                    kind = sub_value.decode() if sub_wire == 2 else str(sub_value)
                elif sub_number == blob_field and sub_wire == 2:
                    blobs.append(parse_blob(sub_value))
            layers.append((name, kind, blobs))
    except ConversionError as exc:
        raise ConversionError(f"{path}: malformed caffemodel ({exc})") from exc
    if not layers:
        raise ConversionError(f"{path}: no layers found; not a Caffe NetParameter")
    return layers


def srrecnn_from_caffe(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and config of our SRReCNN3D from the original caffemodel."""
    path = Path(path)
    convs = [(n, b) for n, _, b in read_caffemodel(path) if len(b) == 2 and b[0].ndim == 5]
    if len(convs) < 2:
        raise ConversionError(f"{path}: found {len(convs)} 3D convolution layers with weights")
    first, last = convs[0][1][0], convs[-1][1][0]
    if last.shape[0] != 1:
        raise ConversionError(f"{path}: last convolution has {last.shape[0]} outputs, expected 1")
    config = {
        "layers": len(convs),
        "features": int(first.shape[0]),
        "in_channels": int(first.shape[1]),
    }
    state = {}
    for i, (_, (weight, bias)) in enumerate(convs):
        state[f"body.{2 * i}.weight"] = torch.from_numpy(weight.copy())
        state[f"body.{2 * i}.bias"] = torch.from_numpy(bias.reshape(-1).copy())
    return state, config


# --------------------------------------------------------------------------- command
ORIGINS = {
    "fsrcnn": {
        "origin": "3D FSRCNN (seed 000), Keras 2.2.5 HDF5",
        "licence": "none stated in the original repository",
        "data": "HCP T1w 256×320×320 (original training set)",
        "degradation": "decimation HR[::2] (no blur)",
        "original_intensity": "image / max × 255, uint8 (0–255); stored here as input_scale 255",
        "alignment": "TF 'same' transposed conv: output[::2] sits on the LR samples (the "
        "original's decimation), half an HR voxel off bids_sr's block-centred grid",
    },
    "srrecnn": {
        "origin": "SRReCNN3D (seed 001), Caffe caffemodel",
        "licence": "CeCILL-B",
        "data": "Kirby21 (KKI2009) MPRAGE",
        "degradation": "Gaussian blur σ = 1 HR voxel, cubic-spline zoom 1/s then s",
        "original_intensity": "min–max to [0, 1]",
    },
}
ORIGINS["srrecnn-t2w"] = {
    **ORIGINS["srrecnn"],
    "origin": "multimodal SRReCNN3D (seed 001), Caffe caffemodel",
}


def convert(
    in_path: str | Path, out_path: str | Path, method: str, factors: Sequence[float] | None = None
) -> Path:
    """Convert an original weights file into our safetensors + card; return the output path."""
    in_path = Path(in_path)
    if not in_path.is_file():
        raise ConversionError(f"{in_path}: file not found")
    if method not in CONVERTIBLE:
        raise ConversionError(f"{in_path}: no importer for {method!r}; use {CONVERTIBLE}")
    if method == "fsrcnn":
        state, config, strides = fsrcnn_from_keras(in_path)
        trained = [float(v) for v in strides]
    else:
        state, config = srrecnn_from_caffe(in_path)
        expected_channels = 2 if method == "srrecnn-t2w" else 1
        if config["in_channels"] != expected_channels:
            raise ConversionError(
                f"{in_path}: the network takes {config['in_channels']} input channel(s); "
                f"{method} needs {expected_channels}"
            )
        trained = [2.0, 2.0, 2.0]
    if factors is not None:
        trained = [float(f) for f in factors]
    spec = get_spec(method)
    model = spec.build(config)
    expected = model.state_dict()
    problems = [k for k in expected if k not in state or state[k].shape != expected[k].shape]
    if problems:
        raise ConversionError(f"{in_path}: tensors do not fit {method}: {', '.join(problems[:4])}")
    model.load_state_dict(state, strict=True)
    card = {
        **ORIGINS[method],
        "imported_from": in_path.name,
        "imported_sha256": sha256sum(in_path),
        "command": "bids_sr-convert-weights "
        f"{in_path.name} {Path(out_path).name} --method {method}",
    }
    return save_weights(model, out_path, method=method, config=config, factors=trained, card=card)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``bids_sr-convert-weights IN OUT --method {fsrcnn,srrecnn,srrecnn-t2w}``."""
    parser = argparse.ArgumentParser(
        prog="bids_sr-convert-weights",
        description="Convert the originals' published weights (3D FSRCNN Keras .h5, SRReCNN3D "
        ".caffemodel) into bids_sr safetensors with a model card.",
    )
    parser.add_argument("input", type=Path, help="original weights (.h5 or .caffemodel)")
    parser.add_argument("output", type=Path, help="output .safetensors path")
    parser.add_argument("--method", required=True, choices=CONVERTIBLE)
    parser.add_argument(
        "--factors",
        type=float,
        nargs=3,
        metavar=("FX", "FY", "FZ"),
        help="factors the original was trained for (default: from the file "
        "for FSRCNN, 2 2 2 for SRReCNN3D)",
    )
    args = parser.parse_args(argv)
    if args.output.suffix != ".safetensors":
        parser.error(f"output must end in .safetensors, got {args.output}")
    try:
        out = convert(args.input, args.output, args.method, args.factors)
    except ConversionError as exc:
        print(f"bids_sr-convert-weights: error: {exc}", file=sys.stderr)
        return 65
    print(f"wrote {out} and {out.name.removesuffix('.safetensors')}.card.json")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
