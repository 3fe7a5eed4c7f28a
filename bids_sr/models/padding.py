"""Border handling shared by the networks: the padding mode of their convolutions, and a
transposed 3D convolution that honours it and is safe on tiny inputs.

Why a padding mode. Training patches are small (8–16 LR voxels) next to the receptive
fields (10–17 LR voxels), so almost every output voxel of a training patch sees the
convolutions' padding. With zero padding the network learns to brighten what the dark
border pulls down — and on a whole volume, where tiles overlap by the receptive radius and
no output sees padding, that learned compensation is missing: the output comes out darker
(3D SRGAN: −0.05 on a [0, 1] scale, 2 dB). ``replicate`` padding extends the patch with its
own edge values, so a border voxel is not systematically darker and nothing needs undoing.
``zeros`` stays the models' default (the originals' Keras 'same'; imported weights need it).

Why a safe transposed convolution. torch 2.13's CPU (oneDNN) backward pass of
``ConvTranspose3d`` returns garbage weight gradients, or corrupts the heap, when an input axis
is shorter than about half the kernel (3–4 LR voxels for FSRCNN's 9³ kernel: the training
tests' small patches). Padding the input and cropping the output is exact for zeros — a
transposed convolution is linear and local, so ``p`` padded voxels on each side add
``p·stride`` output voxels on each side and nothing else — and keeps axes long enough.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PADDING_MODES = ("zeros", "replicate")


def set_padding_mode(model: nn.Module, mode: str) -> None:
    """Make every padded ``Conv3d`` of ``model`` pad with ``mode``."""
    if mode not in PADDING_MODES:
        raise ValueError(f"unknown padding_mode {mode!r}; use one of {PADDING_MODES}")
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            module.padding_mode = mode


def transposed_conv3d(deconv: nn.ConvTranspose3d, x: torch.Tensor,
                      padding_mode: str = "zeros") -> torch.Tensor:
    """``deconv(x)`` with the input extended by ``padding_mode`` (the plain transposed
    convolution extends it with zeros) and axes shorter than the kernel padded for safety;
    the extra output voxels are cropped, so the shape is that of ``deconv(x)``."""
    kernel, stride = deconv.kernel_size, deconv.stride
    pads = []
    for k, s, n in zip(kernel, stride, x.shape[2:]):
        reach = (k // 2 + s - 1) // s + 1 if padding_mode != "zeros" else 0
        pads.append(max(reach, k - n, 0))
    if not any(pads):
        return deconv(x)
    flat = [p for pad in reversed(pads) for p in (pad, pad)]
    y = deconv(F.pad(x, flat, mode="constant" if padding_mode == "zeros" else padding_mode))
    crops = [p * s for p, s in zip(pads, stride)]
    return y[:, :, crops[0]: y.shape[2] - crops[0], crops[1]: y.shape[3] - crops[1],
             crops[2]: y.shape[4] - crops[2]]
