"""The body of ``bids_sr-train`` once arguments and the BIDS selection are checked:
build the model, prepare patches, run the loop, write weights, card, log and loss curve."""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from bids_sr import __version__
from bids_sr.bids import dataset_relative
from bids_sr.cards.paths import card_path, format_factors
from bids_sr.cards.write import update_card, write_markdown
from bids_sr.contrast import randomise_contrast, tissue_centres
from bids_sr.errors import UsageError
from bids_sr.gradfilter.xp import get_backend
from bids_sr.image import load_volume, voxel_sizes
from bids_sr.inference import resolve_device
from bids_sr.models.registry import get_spec
from bids_sr.models.srgan import build_discriminator
from bids_sr.models.weights import load_model, save_weights, sha256sum
from bids_sr.training.checkpoint import checkpoint_exists, load_checkpoint
from bids_sr.training.data import PatchSampler, integer_factor_tuple, prepare_volume
from bids_sr.training.defaults import DEFAULTS
from bids_sr.training.gradfilter import train_gradfilter
from bids_sr.training.loops import (
    AdversarialTask,
    LoopSettings,
    SupervisedTask,
    plot_history,
    run_loop,
)
from bids_sr.training.scores import validation_scores

CPU_NOTE = (
    "Trained on CPU with a reduced budget ({iterations} iterations, {wall:.0f} s); "
    "a later session retrains on GPU with the published schedule."
)


def _software() -> dict[str, str]:
    return {"bids_sr": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _files(entries: list[dict[str, Any]], bids_dir: Path) -> list[dict[str, Any]]:
    """Each image as a path relative to the dataset (cards travel between machines) with
    its sha256 (which pins the exact data)."""

    def rel(path: Any) -> str:
        try:
            return dataset_relative(path, bids_dir)
        except ValueError:
            return str(path)

    out = []
    for e in entries:
        item = {"subject": e["label"], "t1w": rel(e["t1w"]), "t1w_sha256": sha256sum(e["t1w"])}
        if e.get("reference"):  # key by contrast: "t2w", "flair"
            key = str(e["reference_suffix"]).lower()
            item.update({key: rel(e["reference"]), f"{key}_sha256": sha256sum(e["reference"])})
        if e.get("weight", 1.0) != 1.0:
            item["weight"] = e["weight"]
        out.append(item)
    return out


def _evaluate_and_finish(args, factors, selection, weights: Path, card_extra: dict[str, Any],
                         device: str) -> Path:
    """Score on the validation participants, merge into the card, write the markdown card."""
    extra = dict(card_extra)
    if selection["val_images"] and not args.no_evaluate:
        t0 = time.perf_counter()
        summary = validation_scores(
            args.method, weights, selection["val_images"], factors, args.degradation,
            device=device, tsv_path=args.output_dir / f"{weights.name[:-12]}_validation.tsv",
            progress=not args.quiet,
        )
        summary["evaluation_s"] = time.perf_counter() - t0
        extra["validation"] = summary
    else:
        extra["validation"] = None
        # appended to the notes already in the card (update_card replaces a key whole)
        written = json.loads(card_path(weights).read_text()).get("notes", [])
        extra["notes"] = [*written, *extra.get("notes", []), (
            "No validation scores: no held-out participants were given (--validation-label)"
            if not selection["val_images"] else "Evaluation skipped (--no-evaluate).")]
    card = update_card(card_path(weights), extra)
    write_markdown(card, card_path(weights))
    return weights


def dataset_info(bids_dir: Path, subjects: list[str]) -> dict[str, Any]:
    """Name/License of the dataset and the participants.tsv rows of ``subjects``."""
    info: dict[str, Any] = {"bids_dir": str(bids_dir.resolve())}
    try:
        description = json.loads((bids_dir / "dataset_description.json").read_text())
        info["name"] = description.get("Name")
        info["license"] = description.get("License")
    except (OSError, ValueError):
        pass
    table = bids_dir / "participants.tsv"
    if table.is_file():
        with table.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        wanted = {f"sub-{s}" for s in subjects}
        info["participants"] = [r for r in rows if r.get("participant_id") in wanted]
    return info


def _common_card(args, factors, selection, command: str, device: str) -> dict[str, Any]:
    return {
        "degradation": args.degradation,
        "training_subjects": selection["training"],
        "validation_subjects": selection["validation"],
        "data": {
            **dataset_info(args.bids_dir, selection["training"] + selection["validation"]),
            "training_files": _files(selection["train_images"], args.bids_dir),
            "validation_files": _files(selection["val_images"], args.bids_dir),
        },
        "weights_license": "Apache-2.0 (bids_sr); the training data's own terms are in data",
        "seed": args.seed,
        "device": device,
        "command": command,
        "software": _software(),
        "notes": list(args.note),
    }


def train_filters(args: argparse.Namespace, factors, selection, command: str) -> Path:
    """gradfilter: closed-form per-bucket least squares through train_gradfilter."""
    device = get_backend(args.device).device
    stem = args.output_name or f"gradfilter_x{format_factors(factors)}"
    path = args.output_dir / f"{stem}.safetensors"
    card = _common_card(args, factors, selection, command, device)
    t0 = time.perf_counter()
    train_gradfilter(
        [Path(e["t1w"]) for e in selection["train_images"]], path, factors,
        degradation=args.degradation, seed=args.seed, progress=not args.quiet,
        card_extra=card, patch_size=args.patch_size or 7, stride=args.sample_stride,
        device=args.device,
    )
    wall = time.perf_counter() - t0
    extra = {"train_wall_s": wall, "iterations": "closed form"}
    if device == "cpu":
        extra["notes"] = card["notes"] + [
            f"Learned on CPU in {wall:.0f} s (sample stride {args.sample_stride}); a later "
            "session relearns on GPU with denser sampling."
        ]
    update_card(card_path(path), extra)
    return _evaluate_and_finish(args, factors, selection, path, {}, device)


def architecture_note(published: dict[str, Any], overrides: dict[str, Any]) -> str | None:
    """The card note naming each architecture setting that --config moved away from the
    published model (e.g. fewer features to fit a CPU budget), or None when none did: a
    reader comparing with the original paper must know the weights are not its shape."""
    changed = [f"{key} {overrides[key]} (published {value})"
               for key, value in published.items() if overrides.get(key, value) != value]
    if not changed:
        return None
    return "Architecture differs from the published model: " + ", ".join(changed) + "."


def _near_identity_start(model, std: float = 1e-3) -> None:
    """Give a residual network's last convolution tiny weights (N(0, std), zero bias) so
    training starts from its interpolated input (the cubic B-spline result) while every
    layer still receives a gradient from the first step (an exactly zero last layer blocks
    the gradient to the layers below it at first, and a 2-channel net was seen to stall)."""
    last = [m for m in model.modules() if isinstance(m, nn.Conv3d)][-1]
    with torch.no_grad():
        last.weight.normal_(0.0, std)
        last.bias.zero_()


def train_network(args: argparse.Namespace, factors, selection, command: str) -> Path | None:
    """Supervised or adversarial training of a registry network (module doc)."""
    if args.nthreads:
        torch.set_num_threads(args.nthreads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    method = args.method
    spec = get_spec(method)
    ints = integer_factor_tuple(factors)
    d = DEFAULTS[method]
    iterations = args.iterations or d["iterations"]
    settings = LoopSettings(
        iterations=iterations,
        batch_size=args.batch_size or d["batch_size"],
        lr=args.lr or d["lr"],
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
        loss_margin=args.loss_margin,
        pretrain_iterations=(
            (args.pretrain_iterations if args.pretrain_iterations is not None
             else int(0.75 * iterations)) if method == "srgan" else 0
        ),
    )
    patch = args.patch_size or d["patch_size"]

    # model
    if args.init is not None:
        model, info = load_model(args.init, method=method, factors=factors)
        config = dict(info["config"])
        if args.config:
            raise UsageError("--config cannot change the architecture of --init weights")
        init = f"fine-tuned from {args.init} (sha256 {info['sha256']})"
        # what the first run's --config chose (not the recipe's settings, not the factors)
        recipe = {*d.get("config", {}), "factors"}
        chosen = {k: v for k, v in config.items() if k not in recipe}
    else:
        # the model's published defaults, then the training recipe's (models/padding.py)
        config = {**spec.default_config, **d.get("config", {}), **args.config}
        chosen = dict(args.config)
        if spec.learned_upsampling:
            config["factors"] = list(ints)
        try:
            model = spec.build(config)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"--config does not build {method}: {exc}") from None
        init = "random (the registry's initialisation)"
        if spec.input_grid == "hr":
            _near_identity_start(model)
            init += ("; last convolution drawn from N(0, 1e-3) so training starts from the "
                     "cubic B-spline input")
    model.to(device)
    if method == "srgan":
        disc = build_discriminator({"in_channels": 1}).to(device)
        task = AdversarialTask(model, disc, settings)
    else:
        task = SupervisedTask(model, settings)

    # data
    t_prep = time.perf_counter()
    guided = spec.needs_reference
    misregistration = tuple(args.reference_misregistration) if guided else (0.0, 0.0)

    def prepare(entries, smoothed_copies=()):
        """Training volumes of ``entries``; with ``smoothed_copies`` (Gaussian SDs in
        voxels) each participant also gives one copy per SD whose T1w and reference are
        smoothed alike, the copies sharing half of its sampling weight."""
        volumes = []
        for e in entries:
            image = load_volume(e["t1w"])
            ref = load_volume(e["reference"]).data if guided and e.get("reference") else None
            weight = e.get("weight", 1.0)
            versions = [("", 0.0, weight / (2 if smoothed_copies else 1))]
            versions += [(f" smoothed {sd:g}", sd, weight / (2 * len(smoothed_copies)))
                         for sd in smoothed_copies]  # fmt: skip
            for label, sd, share in versions:
                hr, guide = image.data, ref
                if sd:
                    hr = gaussian_filter(np.asarray(hr, np.float32), sd)
                    if ref is not None:
                        guide = gaussian_filter(np.asarray(ref, np.float32), sd)
                vol = prepare_volume(Path(e["t1w"]).name + label, hr, ints, args.degradation,
                                     hr_grid_input=spec.input_grid == "hr", reference=guide,
                                     weight=share, spacing=voxel_sizes(image.affine))
                if guided:
                    vol.extra["centres"] = tissue_centres(vol.hr, seed=args.seed)
                volumes.append(vol)
        return volumes

    def synth(target, rng, vol):
        return randomise_contrast(target, rng, vol.extra["centres"], blur=args.reference_blur)

    common = dict(input_grid=spec.input_grid, degradation=args.degradation,
                  reference_fn=synth if guided else None)
    try:
        sampler = PatchSampler(prepare(selection["train_images"], args.smoothed_copies),
                               patch, **common,
                               synth_probability=0.5,
                               background_fraction=args.background_fraction,
                               uninformative_fraction=args.uninformative_reference_fraction,
                               misregistration=misregistration)
        val_batch = None
        if selection["val_images"]:
            val_sampler = PatchSampler(prepare(selection["val_images"]), patch, **common,
                                       synth_probability=0.0)
            val_batch = val_sampler.fixed_batch(16, args.seed + 1)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    prep_s = time.perf_counter() - t_prep

    run_config = {
        "method": method, "factors": list(ints), "degradation": args.degradation,
        "seed": args.seed, "config": config, "patch_size": patch,
        "batch_size": settings.batch_size, "iterations": iterations, "lr": settings.lr,
        "training": selection["training"], "validation": selection["validation"],
    }
    if any(misregistration):  # only guided runs carry the key
        run_config["reference_misregistration"] = list(misregistration)
    if guided and args.reference_blur:  # absent at 0, so earlier checkpoints still resume
        run_config["reference_blur"] = args.reference_blur
    if args.smoothed_copies:  # absent when none, likewise
        run_config["smoothed_copies"] = list(args.smoothed_copies)
    rng = np.random.default_rng(args.seed)
    folder = args.output_dir
    start, history = 0, []
    if checkpoint_exists(folder / "checkpoints"):
        if not args.resume:
            raise UsageError(
                f"{folder}: holds a checkpoint of an earlier run; pass --resume to continue "
                "it or choose another output folder"
            )
        document = load_checkpoint(folder / "checkpoints", modules=task.modules,
                                   optimizers=task.optimizers, rng=rng)
        saved = {k: document["config"].get(k) for k in run_config}
        changed = sorted(k for k in run_config if saved[k] != run_config[k])
        if changed:
            raise UsageError(f"{folder}: cannot resume, the run differs in {', '.join(changed)}")
        start, history = int(document["step"]), document["history"]
        if not args.quiet:
            print(f"bids_sr-train: resuming {method} at step {start}/{iterations}")
    history = run_loop(task, sampler, settings, rng, device=device, folder=folder,
                       config=run_config, val_batch=val_batch, start_step=start,
                       history=history, stop_after=args.stop_after, progress=not args.quiet)
    step = history[-1]["step"] if history else start
    plot_history(history, folder / "loss_curve.png",
                 f"{method} ×{format_factors(factors)} ({args.degradation})")
    if step < iterations:
        print(f"bids_sr-train: stopped at step {step}/{iterations}; continue with --resume")
        return None

    wall = float(history[-1]["elapsed_s"])
    stem = args.output_name or f"{method}_x{format_factors(factors)}"
    path = folder / f"{stem}.safetensors"
    card = _common_card(args, factors, selection, command, device)
    deviation = architecture_note(spec.default_config, chosen)
    if deviation:
        card["notes"] = card["notes"] + [deviation]
    card.update(
        iterations=iterations,
        settings=asdict(settings),
        patch_size_hr=patch,
        loss="L2 (MSE)" if method != "srgan" else
        "pre-training: MSE; then MSE + gdl_weight·GDL + adv_weight·LSGAN (means)",
        augmentation={"flips": sampler.flips, "axis_permutations": sampler.permute,
                      "intensity_jitter": sampler.jitter},
        initialisation=init,
        train_wall_s=wall,
        data_preparation_s=prep_s,
        final_loss_mean_last_20=float(np.mean([h["loss"] for h in history[-20:]])),
        final_val_patch_psnr=next((h["val_psnr"] for h in reversed(history)
                                   if "val_psnr" in h), None),
        threads=torch.get_num_threads(),
    )
    if args.smoothed_copies:
        card["augmentation"]["smoothed_copies"] = {
            "sd_voxels": list(args.smoothed_copies),
            "description": "each training participant also gives one copy per SD whose T1w "
            "(and reference) is smoothed by that Gaussian before the degradation; the copies "
            "share half of its sampling weight (template-like training images)",
        }
    if guided:
        suffix = spec.reference_suffix
        card["reference_suffix"] = suffix
        blur_text = (f"Gaussian blur of SD ~U(0, {args.reference_blur:g}) voxels, "
                     if args.reference_blur else "")
        card["reference_training"] = (
            "contrast-randomised reference synthesised from each HR T1w (k-means tissue "
            "classes, random per-class intensities mapped piecewise-linearly, bias field, "
            f"gamma, {blur_text}noise) for half the patches of subjects with a real {suffix} "
            f"and all patches of the others; real {suffix} for the other half"
        )
        shift, angle = misregistration
        card["augmentation"]["reference_misregistration"] = {
            "max_translation_mm": shift, "max_rotation_deg": angle,
            "description": "per patch, the reference (real or synthesised) resampled under "
            "a random rigid transform about the patch centre (translation ~U(0, mm) in a "
            "random direction, rotation ~U(0, deg) about a random axis; linear)"
            if any(misregistration) else "none",
        }
    if device == "cpu":
        card["notes"] = card["notes"] + [CPU_NOTE.format(iterations=iterations, wall=wall)]
    model.eval().cpu()
    save_weights(model, path, method=method, config=config, factors=factors, card=card)
    return _evaluate_and_finish(args, factors, selection, path, {}, device)


def train(args: argparse.Namespace, factors, selection, command: str) -> Path | None:
    """Dispatch to the filter learner or the network trainer."""
    if args.method == "gradfilter":
        return train_filters(args, factors, selection, command)
    return train_network(args, factors, selection, command)
