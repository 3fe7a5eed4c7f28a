"""Training loops: supervised (L2) for fsrcnn/espcn/srrecnn/srrecnn-t2w, adversarial (LSGAN)
for srgan; one driver with checkpoints, resume, validation PSNR, a progress bar and a log.

Everything random flows from two generators: numpy's (patch sampling, augmentation,
contrast synthesis) and torch's (initialisation, label smoothing). Both are saved in every
checkpoint, and the learning rate is a pure function of the step, so a run resumed from
step k continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from bids_sr.training.checkpoint import save_checkpoint
from bids_sr.training.data import Batch, PatchSampler


@dataclass
class LoopSettings:
    """Optimisation settings (``pretrain_iterations`` and the ``adv``/``gdl`` weights are
    for the adversarial loop; ``lr_milestones`` are fractions of ``iterations``;
    ``loss_margin`` output voxels at each patch face are left out of every loss and of the
    validation PSNR: they see the convolutions' zero padding, which inference never shows
    a network because its tiles overlap by the receptive radius)."""

    iterations: int
    batch_size: int = 8
    lr: float = 1e-3
    lr_milestones: tuple[float, ...] = (0.6, 0.85)
    lr_gamma: float = 0.3
    warmup: float = 0.05
    val_every: int = 50
    checkpoint_every: int = 100
    log_every: int = 10
    pretrain_iterations: int = 0
    d_lr: float = 1e-4
    adv_weight: float = 1e-3
    gdl_weight: float = 0.1
    label_smoothing: float = 0.1
    loss_margin: int = 0

    def lr_at(self, step: int, base: float | None = None) -> float:
        """Linear warm-up over the first ``warmup`` fraction of the steps (Adam's first
        steps are the largest), then step decay: ``base · gamma^(milestones passed)``."""
        passed = sum(step >= int(m * self.iterations) for m in self.lr_milestones)
        ramp = max(1, int(self.warmup * self.iterations))
        scale = min(1.0, (step + 1) / ramp)
        return (self.lr if base is None else base) * self.lr_gamma**passed * scale


def gradient_difference_loss(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of absolute finite differences along each spatial axis
    (Mathieu et al. 2016), averaged over axes: penalises blurred or invented edges."""
    total = sr.new_zeros(())
    for axis in (2, 3, 4):
        total = total + ((sr.diff(dim=axis).abs() - hr.diff(dim=axis).abs()) ** 2).mean()
    return total / 3.0


def lsgan_loss(score: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN loss: mean of (score − label)² (labels may be smoothed)."""
    return 0.5 * ((score - label) ** 2).mean()


def interior(volume: torch.Tensor, margin: int) -> torch.Tensor:
    """``volume`` (N, C, z, y, x) without ``margin`` voxels at each face."""
    if margin <= 0:
        return volume
    return volume[:, :, margin:-margin, margin:-margin, margin:-margin]


def psnr_batch(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR (dB) of a batch with data range 1 (targets are robust-normalised)."""
    mse = float(((pred - target) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Adam parameter groups honouring the model's ``lr_scale`` attribute (parameter-name
    prefix → learning-rate multiplier, e.g. FSRCNN's deconvolution at 0.1× as published);
    every group carries its ``lr_scale`` so checkpoints restore it."""
    scales: dict[str, float] = dict(getattr(model, "lr_scale", {}) or {})
    groups: dict[float, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        scale = next((v for k, v in scales.items() if name.startswith(k + ".")), 1.0)
        groups.setdefault(float(scale), []).append(param)
    return [{"params": params, "lr_scale": scale} for scale, params in groups.items()]


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


class SupervisedTask:
    """L2 loss, Adam, step learning-rate decay (per-layer multipliers: ``parameter_groups``)."""

    kind = "supervised"

    def __init__(self, model: nn.Module, settings: LoopSettings):
        self.model = model
        self.settings = settings
        self.optimizer = torch.optim.Adam(parameter_groups(model), lr=settings.lr)
        self.modules = {"model": model}
        self.optimizers = {"adam": self.optimizer}

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> dict[str, float]:
        _set_lr(self.optimizer, self.settings.lr_at(step))
        self.model.train()
        m = self.settings.loss_margin
        loss = ((interior(self.model(inputs), m) - interior(targets, m)) ** 2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"loss": loss.item(), "lr": self.settings.lr_at(step)}


class AdversarialTask:
    """SRGAN's loop: content-only pre-training for ``pretrain_iterations`` steps, then
    alternating LSGAN updates. Generator loss = MSE + gdl_weight·GDL + adv_weight·LSGAN (all
    means, so the weights mean what they say); labels smoothed (real ~U(1−s, 1), fake
    ~U(0, s)) and redrawn every step."""

    kind = "adversarial"

    def __init__(self, generator: nn.Module, discriminator: nn.Module, settings: LoopSettings):
        self.model = generator
        self.disc = discriminator
        self.settings = settings
        self.g_opt = torch.optim.Adam(parameter_groups(generator), lr=settings.lr,
                                      betas=(0.9, 0.999))
        self.d_opt = torch.optim.Adam(discriminator.parameters(), lr=settings.d_lr,
                                      betas=(0.5, 0.999))
        self.modules = {"model": generator, "disc": discriminator}
        self.optimizers = {"generator": self.g_opt, "discriminator": self.d_opt}

    def _labels(self, n: int, real: bool, like: torch.Tensor) -> torch.Tensor:
        s = self.settings.label_smoothing
        draw = torch.rand(n, 1) * s
        return (1.0 - draw if real else draw).to(like.device, like.dtype)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> dict[str, float]:
        st = self.settings
        _set_lr(self.g_opt, st.lr_at(step))
        _set_lr(self.d_opt, st.lr_at(step, st.d_lr))
        self.model.train()
        targets = interior(targets, st.loss_margin)
        if step < st.pretrain_iterations:
            loss = ((interior(self.model(inputs), st.loss_margin) - targets) ** 2).mean()
            self.g_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.g_opt.step()
            return {"loss": loss.item(), "content": loss.item(), "lr": st.lr_at(step)}
        n = inputs.shape[0]
        fake = interior(self.model(inputs), st.loss_margin)
        # discriminator update
        self.disc.train()
        d_loss = lsgan_loss(self.disc(targets), self._labels(n, True, targets)) + lsgan_loss(
            self.disc(fake.detach()), self._labels(n, False, targets)
        )
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        # generator update
        content = ((fake - targets) ** 2).mean()
        gdl = gradient_difference_loss(fake, targets)
        adv = lsgan_loss(self.disc(fake), self._labels(n, True, targets))
        g_loss = content + st.gdl_weight * gdl + st.adv_weight * adv
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.g_opt.step()
        return {
            "loss": g_loss.item(),
            "content": content.item(),
            "gdl": gdl.item(),
            "adversarial": adv.item(),
            "discriminator": d_loss.item(),
            "lr": st.lr_at(step),
        }


def evaluate_batch(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                   chunk: int = 4, margin: int = 0) -> float:
    """PSNR of ``model`` on fixed validation patches (eval mode, no gradients), leaving
    ``margin`` voxels at each face out."""
    inputs, targets = batch
    model.eval()
    preds = []
    with torch.no_grad():
        for s in range(0, inputs.shape[0], chunk):
            preds.append(model(inputs[s:s + chunk]))
    model.train()
    return psnr_batch(interior(torch.cat(preds), margin), interior(targets, margin))


def _to_device(batch: Batch, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(batch.inputs).to(device), torch.from_numpy(batch.targets).to(device))


def _write_log(path: Path, history: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(h) + "\n" for h in history))


def run_loop(
    task: SupervisedTask | AdversarialTask,
    sampler: PatchSampler,
    settings: LoopSettings,
    rng: np.random.Generator,
    *,
    device: str,
    folder: Path,
    config: dict[str, Any],
    val_batch: Batch | None = None,
    start_step: int = 0,
    history: list[dict[str, Any]] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``task`` from ``start_step`` to ``settings.iterations`` (or ``stop_after`` more
    steps), checkpointing into ``folder/checkpoints`` and logging to ``folder/train_log.jsonl``.

    History records (one per step): step, loss (and loss parts), lr, elapsed seconds;
    every ``val_every`` steps and at the last step also ``val_psnr`` on ``val_batch``.
    """

    history = list(history or [])
    log_path = folder / "train_log.jsonl"
    _write_log(log_path, history)
    val = _to_device(val_batch, device) if val_batch is not None else None
    end = settings.iterations
    if stop_after is not None:
        end = min(end, start_step + int(stop_after))
    elapsed0 = history[-1]["elapsed_s"] if history else 0.0
    t0 = time.perf_counter()
    last_val = next((h["val_psnr"] for h in reversed(history) if "val_psnr" in h), None)
    bar = tqdm(range(start_step, end), initial=start_step, total=settings.iterations,
               desc=f"training {config.get('method', '')}", disable=not progress,
               dynamic_ncols=True)
    running = None
    with log_path.open("a") as log:
        for step in bar:
            inputs, targets = _to_device(sampler.batch(settings.batch_size, rng), device)
            record: dict[str, Any] = {"step": step + 1, **task.step(inputs, targets, step)}
            record["elapsed_s"] = elapsed0 + time.perf_counter() - t0
            last = step + 1 == settings.iterations
            if val is not None and ((step + 1) % settings.val_every == 0 or last):
                last_val = evaluate_batch(task.model, val, margin=settings.loss_margin)
                record["val_psnr"] = last_val
            history.append(record)
            log.write(json.dumps(record) + "\n")
            if (step + 1) % settings.log_every == 0:
                log.flush()
            running = record["loss"] if running is None else 0.9 * running + 0.1 * record["loss"]
            postfix = {"loss": f"{running:.3g}"}
            if last_val is not None:
                postfix["val_psnr"] = f"{last_val:.2f}"
            bar.set_postfix(postfix, refresh=False)
            if on_step is not None:
                on_step(step + 1, record)
            if (step + 1) % settings.checkpoint_every == 0 and step + 1 != end:
                save_checkpoint(folder / "checkpoints", step=step + 1, modules=task.modules,
                                optimizers=task.optimizers, rng=rng, history=history,
                                config={**config, "settings": asdict(settings)})
    bar.close()
    save_checkpoint(folder / "checkpoints", step=end, modules=task.modules,
                    optimizers=task.optimizers, rng=rng, history=history,
                    config={**config, "settings": asdict(settings)})
    return history


def plot_history(history: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss curve (per step and a running mean, log scale) and validation PSNR (right axis)."""
    # late: matplotlib (~0.5 s) only for this figure; Agg must be chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, loss, color="0.75", lw=0.8, label="training loss")
    if len(loss) >= 10:
        k = max(5, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1:], smooth, color="C0", lw=1.5, label=f"running mean ({k} steps)")
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    vals = [(h["step"], h["val_psnr"]) for h in history if "val_psnr" in h]
    if vals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*vals), "o-", color="C3", ms=3, label="validation PSNR")
        ax2.set_ylabel("validation patch PSNR (dB)", color="C3")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
