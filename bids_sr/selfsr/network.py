"""A small 2D residual CNN trained per scan on in-plane pairs (SMORE's principle).

Input: two channels, the B-spline-upsampled plane (degraded along its first axis, rows =
positions across the slices) and the phase of each row relative to the acquired slices
(:func:`bids_sr.selfsr.pairs.slice_phase`): the network cannot see from a smooth B-spline
image where the acquired slices lie, the phase tells it; a guided network (``selfsr-t2w``)
has a third, the registered reference's plane (not degraded). Output: the plane plus a
learned residual. ``depth`` 3×3 convolutions of ``width`` channels with ReLU between, run on the
plane pixel-unshuffled by 2 (four sub-sampled copies as channels: a layer sees twice as far
and costs a quarter per channel², so 128 channels cost what 64 did at full resolution and
learn more: trained on the truth of chris at 1×1×3, +2.05 dB over B-spline against +1.94);
the last layer is initialised near zero so training starts from the B-spline baseline.
Per scan it starts from the shipped slice-family prior of the same architecture (a
narrower prior is widened without changing its output, :func:`widen_state`).

Training (:func:`train_plane_net`) draws random patches centred in the head from the pairs
of :func:`bids_sr.selfsr.pairs.degrade_axis` (both in-plane axes, flips along the clean
axis), L1 loss, Adam with a one-cycle schedule; seeded, so a seed gives one result.
Application (:func:`apply_plane_net`) runs whole planes in batches.

Part of the numerical core (never imports nipype or pybids).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from bids_sr.acquisition import Acquisition
from bids_sr.precision import autocast, memory_format
from bids_sr.progress import track
from bids_sr.recipes import SELFSR, SelfSRRecipe
from bids_sr.selfsr.filters import head_region
from bids_sr.selfsr.pairs import (
    crop_to_slices,
    degrade_axis,
    detailed_inplane_axes,
    inplane_axes,
    inplane_orientations,
    slice_phase,
)


@dataclass(frozen=True)
class TrainSettings:
    """One training run's settings: iterations (None: :func:`iterations_for` the scan), batch
    of ``patch``² patches, the network's shape (a network trained from scratch; one
    fine-tuned from ``init`` keeps that state's depth and unshuffle factor and is widened to
    ``width``, :func:`widen_state`), the peak learning rate. The defaults are the shipped
    recipe's (:class:`bids_sr.recipes.SelfSRRecipe`); :meth:`of` takes another's."""

    iterations: int | None = None
    batch: int = SELFSR.batch
    patch: int = SELFSR.patch
    width: int = SELFSR.width
    depth: int = SELFSR.depth
    unshuffle: int = SELFSR.unshuffle
    lr: float = SELFSR.lr

    @classmethod
    def of(cls, recipe: SelfSRRecipe, iterations: int | None = None,
           fine_tune: bool = False) -> TrainSettings:  # fmt: skip
        """The settings of ``recipe``: its rate from scratch, or its fine-tuning rate."""
        return cls(iterations=iterations, batch=recipe.batch, patch=recipe.patch,
                   width=recipe.width, depth=recipe.depth, unshuffle=recipe.unshuffle,
                   lr=recipe.fine_tune_lr if fine_tune else recipe.lr)  # fmt: skip


def iterations_for(n_voxels: int, settings: TrainSettings,
                   recipe: SelfSRRecipe = SELFSR) -> int:  # fmt: skip
    """Steps for the recipe's ``epochs`` passes over ``n_voxels`` training voxels, within its
    bounds (``min_iterations``, ``max_iterations``); ``settings.iterations`` when set."""
    if settings.iterations is not None:
        return int(settings.iterations)
    steps = recipe.epochs * n_voxels / (settings.batch * settings.patch**2)
    return int(np.clip(round(steps), recipe.min_iterations, recipe.max_iterations))


class PlaneNet(nn.Module):
    """Residual 2D CNN: ``(N, inputs, H, W)`` (image, phase[, reference]) → ``(N, 1, H, W)``.

    ``inputs`` is 2, or 3 for a guided network (the registered reference's plane as a third
    channel, :func:`add_reference_input`).

    ``unshuffle`` > 1 runs the convolutions on ``unshuffle``² sub-sampled copies of the plane
    stacked as channels (pixel unshuffle) and shuffles the residual back: a layer then
    costs 1/``unshuffle``² per channel² and sees ``unshuffle``× further, so a wider network
    fits the same time.
    """

    def __init__(self, depth: int = 8, width: int = 32, unshuffle: int = 1, inputs: int = 2):
        super().__init__()
        cells = unshuffle * unshuffle
        layers: list[nn.Module] = [nn.Conv2d(inputs * cells, width, 3, padding=1),
                                   nn.ReLU(inplace=True)]  # fmt: skip
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        last = nn.Conv2d(width, cells, 3, padding=1)
        nn.init.normal_(last.weight, std=1e-3)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.body = nn.Sequential(*layers)
        self.depth, self.width, self.unshuffle, self.inputs = depth, width, unshuffle, inputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.unshuffle
        if s == 1:
            return x[:, :1] + self.body(x)
        height, width = x.shape[-2:]
        padded = nn.functional.pad(x, (0, -width % s, 0, -height % s), mode="replicate")
        residual = nn.functional.pixel_shuffle(
            self.body(nn.functional.pixel_unshuffle(padded, s)), s
        )
        return x[:, :1] + residual[..., :height, :width]


@dataclass(frozen=True)
class Architecture:
    """The shape of a :class:`PlaneNet`, as read back from its weights."""

    depth: int
    width: int
    unshuffle: int
    inputs: int

    def build(self, width: int | None = None, inputs: int | None = None) -> PlaneNet:
        """A fresh network of this shape (optionally wider, or with more input channels)."""
        return PlaneNet(depth=self.depth, width=width or self.width, unshuffle=self.unshuffle,
                        inputs=inputs or self.inputs)  # fmt: skip


def _architecture(tensors: dict) -> Architecture:
    """The :class:`Architecture` of the :class:`PlaneNet` whose weights are ``tensors`` (a
    state dict or its arrays); KeyError when they hold no ``body.0.weight``."""
    names = [k for k in tensors if k.startswith("body.") and k.endswith(".weight")]
    last = max(names, key=lambda k: int(k.split(".")[1]))
    cells = int(np.asarray(tensors[last]).shape[0])  # the output: one channel per sub-grid
    first = np.asarray(tensors["body.0.weight"]).shape
    return Architecture(
        depth=len(names), width=int(first[0]), unshuffle=int(round(np.sqrt(cells))),
        inputs=int(first[1]) // cells,
    )  # fmt: skip


def add_reference_input(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A guided :class:`PlaneNet` state (a third input channel, the reference's plane) that
    computes what the unguided ``state`` does: the reference's weights start at zero, so
    fine-tuning starts from the unguided result and learns only what the reference adds."""
    arch = _architecture(state)
    if arch.inputs != 2:
        raise ValueError(f"expected an unguided network (2 inputs), got {arch.inputs}")
    first = state["body.0.weight"]
    cells = arch.unshuffle * arch.unshuffle
    # pixel unshuffle orders channels input-major: the reference's cells come last
    extra = first.new_zeros((first.shape[0], cells, *first.shape[2:]))
    return {**state, "body.0.weight": torch.cat([first, extra], dim=1)}


def widen_state(state: dict[str, torch.Tensor], width: int) -> dict[str, torch.Tensor]:
    """A :class:`PlaneNet` state with ``width`` channels that computes what ``state`` does.

    The old channels keep their weights and ignore the new ones (zero weights from new to
    old channels and into the output layer); the new channels start from fresh random
    weights on their inputs, so they receive gradients and add capacity as training goes on.
    """
    arch = _architecture(state)
    if width < arch.width:
        raise ValueError(f"cannot narrow a {arch.width}-channel network to {width} channels")
    fresh = arch.build(width=width).state_dict()
    out = {}
    for name, new in fresh.items():
        old, new = state[name], new.clone()
        rows = old.shape[0]
        if name.endswith(".weight"):
            inputs = old.shape[1]
            new[:rows, inputs:] = 0  # old channels (and the output) ignore the new ones
            new[:rows, :inputs] = old
        else:
            new[:rows] = old
            new[rows:] = 0
        out[name] = new
    return out


#: The guide enters the network at this multiple of its normalised intensity. Its first-layer
#: weights start at zero and Adam moves every weight by about the learning rate per step, so
#: the gain makes what the guide contributes grow that many times faster: the per-scan
#: budget, sized for the unguided network, then suffices to learn it. Guided − selfsr at
#: 1×1×3, the same steps, gain 1 / 4 / 16: mni152 +0.23 / +0.63 / +0.86 dB, openms19
#: +1.15 / +1.20 / +1.34 dB; with a reference of noise (openms19, 1×1×5) +0.003 / +0.006 /
#: −0.001 dB.
REFERENCE_GAIN = 16.0


def planes_input(planes: np.ndarray, phase: np.ndarray,
                 reference: np.ndarray | None = None) -> torch.Tensor:  # fmt: skip
    """Stack ``(N, H, W)`` planes with the per-row ``phase`` (length H) as channel 2 and,
    for a guided network, the reference's ``(N, H, W)`` planes (× :data:`REFERENCE_GAIN`)
    as channel 3."""
    planes = np.asarray(planes, dtype=np.float32)
    ph = np.broadcast_to(np.asarray(phase, dtype=np.float32)[None, :, None], planes.shape)
    channels = [planes, ph]
    if reference is not None:
        channels.append(np.asarray(reference, dtype=np.float32) * np.float32(REFERENCE_GAIN))
    return torch.from_numpy(np.ascontiguousarray(np.stack(channels, axis=1)))


@dataclass
class _Pairs:
    degraded: np.ndarray  # (stack, H, W): H across the simulated slices
    target: np.ndarray
    centres: np.ndarray  # flat indices of head voxels usable as patch centres
    phase: np.ndarray  # (H,)
    reference: np.ndarray | None = None  # (stack, H, W): the guide's planes, not degraded


def _pairs(volume: np.ndarray, acquisition: Acquisition, factor: float, patch: int,
           reference: np.ndarray | None = None,
           axes: Sequence[int] | None = None) -> list[_Pairs]:  # fmt: skip
    """Training pairs along the in-plane ``axes`` of ``volume`` (the acquired slices; default
    both in-plane axes); with a ``reference`` of the same shape (the guide at the acquired
    slices), its planes too."""
    slice_axis = int(acquisition.slice_axis)
    out = []
    for axis, other in inplane_orientations(slice_axis, axes):
        degraded, target, n_lr = degrade_axis(volume, axis, factor, acquisition)
        order = (slice_axis, axis, other)
        d, t = np.transpose(degraded, order), np.transpose(target, order)
        pad = [(0, 0)] + [(max(0, patch - n), 0) for n in d.shape[1:]]
        d, t = np.pad(d, pad, mode="edge"), np.pad(t, pad, mode="edge")
        phase = np.pad(slice_phase(degraded.shape[axis], n_lr), (pad[1][0], 0), mode="edge")
        guide = None
        if reference is not None:  # cropped along ``axis`` as degrade_axis crops the target
            kept = crop_to_slices(reference, axis, factor)
            guide = np.ascontiguousarray(np.pad(np.transpose(kept, order), pad, mode="edge"),
                                         dtype=np.float32)  # fmt: skip
        out.append(_Pairs(np.ascontiguousarray(d), np.ascontiguousarray(t),
                          patch_centres(t, patch), phase, guide))  # fmt: skip
    return out


def patch_centres(target: np.ndarray, patch: int) -> np.ndarray:
    """Flat indices of the head voxels of the ``(stack, H, W)`` planes ``target`` around
    which a ``patch``² patch fits inside the plane (any position for a tiny or empty scan)."""
    region = head_region(target)
    half = patch // 2
    region[:, :half], region[:, target.shape[1] - (patch - half) + 1:] = False, False
    region[:, :, :half], region[:, :, target.shape[2] - (patch - half) + 1:] = False, False
    centres = np.flatnonzero(region)
    return centres if centres.size else np.arange(target.size)


def _batch(pairs: list[_Pairs], settings: TrainSettings, rng: np.random.Generator
           ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    p, half = settings.patch, settings.patch // 2
    xs, ys, phases, guides = [], [], [], []
    for _ in range(settings.batch):
        pair = pairs[int(rng.integers(len(pairs)))]
        k, i, j = np.unravel_index(int(rng.choice(pair.centres)), pair.degraded.shape)
        i0 = int(np.clip(i - half, 0, pair.degraded.shape[1] - p))
        j0 = int(np.clip(j - half, 0, pair.degraded.shape[2] - p))
        window = (k, slice(i0, i0 + p), slice(j0, j0 + p))
        x, y = pair.degraded[window], pair.target[window]
        g = None if pair.reference is None else pair.reference[window]
        if rng.random() < 0.5:  # flip along the clean axis: the phase stays valid
            x, y = x[:, ::-1], y[:, ::-1]
            g = None if g is None else g[:, ::-1]
        xs.append(x)
        ys.append(y)
        guides.append(g)
        phases.append(pair.phase[i0:i0 + p])
    inputs = torch.cat([
        planes_input(x[None], ph, None if g is None else g[None])
        for x, ph, g in zip(xs, phases, guides, strict=True)
    ])  # fmt: skip
    target = torch.from_numpy(np.ascontiguousarray(np.stack(ys)[:, None], dtype=np.float32))
    return inputs, target


def fit(net: PlaneNet, pairs: list[_Pairs], settings: TrainSettings, steps: int,
        rng: np.random.Generator, *, device: str = "cpu", progress: bool = False,
        desc: str = "selfsr: training") -> dict:  # fmt: skip
    """``steps`` Adam steps (one-cycle schedule, L1 loss) of ``net`` on random patches of
    ``pairs``; returns the final loss (mean of the last tenth of the steps)."""
    layout = memory_format(device)
    net.to(device, memory_format=layout).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=settings.lr, total_steps=steps, pct_start=max(0.05, 2.0 / steps)
    )
    losses = []
    mixed = autocast(device)  # bfloat16 convolutions where the CPU runs them in hardware
    for _ in track(range(steps), desc=desc, bar=progress):
        inputs, target = _batch(pairs, settings, rng)
        with mixed:  # the forward pass only: backward follows the forward's precisions
            prediction = net(inputs.to(device, memory_format=layout))
        loss = nn.functional.l1_loss(prediction.float(), target.to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        losses.append(float(loss.detach()))
    net.to("cpu", memory_format=torch.contiguous_format).eval()
    return {"final_loss": float(np.mean(losses[-max(1, len(losses) // 10):]))}


def net_from_prior(init: dict[str, torch.Tensor], width: int, inputs: int = 2) -> PlaneNet:
    """A :class:`PlaneNet` starting from the prior ``init`` (a state dict): the prior's depth
    and unshuffle factor, widened to ``width`` channels where the prior is narrower
    (:func:`widen_state`), with a guide input at zero weight when ``inputs`` is 3 and the
    prior takes none (:func:`add_reference_input`)."""
    arch = _architecture(init)
    width = max(arch.width, width)
    state = widen_state(init, width)
    if inputs == 3 and arch.inputs == 2:
        state = add_reference_input(state)
    net = arch.build(width=width, inputs=inputs)
    net.load_state_dict(state)
    return net


def train_plane_net(
    volume: np.ndarray, acquisition: Acquisition, factor: float, *, seed: int = 0,
    settings: TrainSettings = TrainSettings(), init: dict | None = None,
    device: str = "cpu", progress: bool = False, reference: np.ndarray | None = None,
    recipe: SelfSRRecipe = SELFSR,
) -> tuple[PlaneNet, dict]:  # fmt: skip
    """Train a :class:`PlaneNet` on the in-plane pairs of ``volume`` (the acquired slices on
    the output grid in-plane); ``init``: a state dict to start from (pretrained weights).
    ``reference``: a guide of ``volume``'s shape (a registered T2w or FLAIR projected onto
    the acquired slices): the network gets its planes as a third input, starting from
    weights that ignore it (:func:`add_reference_input`). ``recipe``: the budget
    (:func:`iterations_for`), the collapse check and the in-plane axes that give pairs
    (``settings`` holds the rest).
    Returns the network (on CPU, eval mode) and a summary (final loss, steps, seconds)."""
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    inputs = 2 if reference is None else 3
    if init is None:
        net = PlaneNet(depth=settings.depth, width=settings.width, unshuffle=settings.unshuffle,
                       inputs=inputs)  # fmt: skip
    else:
        net = net_from_prior(init, settings.width, inputs)
    inplane = inplane_axes(acquisition.slice_axis)
    # small scans: patches no larger than their planes (the step then costs less too)
    patch = int(min(settings.patch, *(volume.shape[a] for a in inplane)))
    settings = replace(settings, patch=max(8, patch))
    if reference is not None and reference.shape != volume.shape:
        raise ValueError(f"reference shape {reference.shape} differs from {volume.shape}")
    # an in-plane axis blurred at acquisition would teach blurred targets (min_detail_ratio)
    axes = detailed_inplane_axes(volume, int(acquisition.slice_axis), recipe.min_detail_ratio)
    pairs = _pairs(volume, acquisition, factor, settings.patch, reference, axes)
    steps = iterations_for(sum(p.degraded.size for p in pairs), settings, recipe)
    # 0 steps: the starting point alone (selfsr-fast), checked on the pairs, not fitted
    summary, ratio, attempts = {"final_loss": float("nan")}, None, 0
    if steps == 0:
        ratio = self_check(net, pairs, settings)
    initial = {k: v.clone() for k, v in net.state_dict().items()} if steps else {}
    # the collapse check: an error ≥ the recipe's collapsed_ratio of B-spline's learned nothing
    for attempt in range(recipe.retries + 1 if steps else 0):
        attempts = attempt + 1
        summary = fit(net, pairs, settings, steps, rng, device=device, progress=progress,
                      desc="selfsr: training on the scan's own slices")  # fmt: skip
        ratio = self_check(net, pairs, settings)
        if ratio < recipe.collapsed_ratio or attempt == recipe.retries:
            break
        # the network collapsed to its input (dead ReLUs): start again, at a lower rate
        net.load_state_dict(initial)
        settings = replace(settings, lr=settings.lr / 2)
    return net, {**summary, "iterations": steps, "train_s": time.perf_counter() - start,
                 "self_check_l1_ratio": ratio, "learned": bool(ratio < recipe.collapsed_ratio),
                 "attempts": attempts, "training_axes": axes}  # fmt: skip


def self_check(net: PlaneNet, pairs: list[_Pairs], settings: TrainSettings,
               batches: int = 8) -> float:  # fmt: skip
    """L1 error of ``net`` over that of its input (the B-spline plane) on fixed random
    batches of ``pairs``: < 1 when the network learned something, 1.0 when it collapsed."""
    rng = np.random.default_rng(12345)
    net_error = base_error = 0.0
    layout = memory_format("cpu")
    net = net.to(memory_format=layout)
    with torch.inference_mode(), autocast("cpu"):  # the precision the network is applied in
        for _ in range(batches):
            inputs, target = _batch(pairs, settings, rng)
            prediction = net(inputs.contiguous(memory_format=layout)).float()
            net_error += float(nn.functional.l1_loss(prediction, target))
            base_error += float(nn.functional.l1_loss(inputs[:, :1], target))
    return net_error / max(base_error, 1e-12)


def apply_plane_net(
    net: PlaneNet, base: np.ndarray, slice_axis: int, other: int, n_lr: int, *,
    region: np.ndarray | None = None, device: str = "cpu", batch: int = 8,
    progress: bool = False, reference: np.ndarray | None = None, flip_average: bool = False,
) -> np.ndarray:  # fmt: skip
    """``base`` with the network applied in the (``slice_axis``, ``other``) planes; planes
    without any voxel of ``region`` (default :func:`head_region`) are left as they are.
    ``reference``: a guided network's guide on ``base``'s grid. ``flip_average``: the mean
    of the predictions for each plane and for its mirror image along ``other`` (flipped
    back): the phase of each row along the slice axis is unchanged by that flip, and the
    two predictions' errors partly cancel (a second forward pass per plane)."""
    region = head_region(base) if region is None else region
    stack = ({0, 1, 2} - {slice_axis, other}).pop()
    order = (stack, slice_axis, other)
    planes = np.transpose(base, order)
    guide = None if reference is None else np.transpose(reference, order)
    keep = np.flatnonzero(np.transpose(region, order).any(axis=(1, 2)))
    phase = slice_phase(base.shape[slice_axis], n_lr)
    out = np.array(planes, dtype=np.float32, copy=True)
    layout = memory_format(device)
    net = net.to(device, memory_format=layout).eval()
    with torch.inference_mode(), autocast(device):
        for start in track(range(0, keep.size, batch), unit="batch", bar=progress,
                           desc=f"selfsr: applying the network in planes ({slice_axis}, "
                           f"{other}), batch"):  # fmt: skip
            index = keep[start:start + batch]
            inputs = planes_input(planes[index], phase, None if guide is None else guide[index])
            inputs = inputs.to(device, memory_format=layout)  # moved to the device once
            result = net(inputs)[:, 0].float()
            if flip_average:  # the mirror is made on the device
                mirrored = torch.flip(inputs, dims=[-1]).contiguous(memory_format=layout)
                result = 0.5 * (result + torch.flip(net(mirrored)[:, 0].float(), [-1]))
            out[index] = result.cpu().numpy()
    return np.ascontiguousarray(np.transpose(out, np.argsort(order)))


def state_to_numpy(net: PlaneNet) -> dict[str, np.ndarray]:
    """The network's weights as float32 arrays (for safetensors)."""
    return {k: v.detach().cpu().contiguous().numpy().astype(np.float32)
            for k, v in net.state_dict().items()}


def net_from_numpy(tensors: dict[str, np.ndarray], names: Sequence[str] | None = None) -> PlaneNet:
    """A :class:`PlaneNet` with weights from :func:`state_to_numpy` arrays (eval mode); its
    depth and width are read from the arrays."""
    net = _architecture(tensors).build()
    keys = names or list(net.state_dict())
    net.load_state_dict({k: torch.from_numpy(np.asarray(tensors[k])) for k in keys})
    return net.eval()
