"""Benchmark of the deep SR networks: wall time, peak memory and achieved GFLOP/s.

For each network, super-resolve a SIZE³ LR volume ×2 (128³ → 256³ by default) tiled (the
registry's default tile) and as one whole-volume pass, each case in its own subprocess so
the CPU peak resident memory (``ru_maxrss``) is that case's alone; on CUDA the peak is
``torch.cuda.max_memory_allocated``. FLOPs are counted per network from its convolutions
(2 · C_in · C_out · k³ per output voxel of a convolution, per input voxel of a transposed
convolution) for the whole-volume workload; the tiled run recomputes its margins, so its
GFLOP/s counts useful work only. Networks are untrained (speed does not depend on weights).

    python benchmarks/inference.py --device cpu --size 128 --methods fsrcnn espcn

The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/inference.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bids_sr import benchmark_record as bench

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("fsrcnn", "espcn", "srgan", "srrecnn", "srrecnn-t2w")


def config_for(method: str) -> dict:
    """Published configuration, at ×2 for the learned-upsampling networks."""
    from bids_sr.models.registry import get_spec

    config = dict(get_spec(method).default_config)
    if "factors" in config:
        config["factors"] = [2, 2, 2]
    return config


def count_flops(method: str, size: int) -> float:
    """FLOPs of one whole-volume pass on a size³ LR volume at ×2 (multiply-adds × 2)."""
    import torch

    from bids_sr.models.registry import get_spec

    spec = get_spec(method)
    model = spec.build(config_for(method)).eval()
    probe = 8
    flops = 0.0

    def hook(module, inputs, output):
        nonlocal flops
        k = 1
        for v in module.kernel_size:
            k *= v
        if isinstance(module, torch.nn.ConvTranspose3d):
            voxels = inputs[0].shape[2] * inputs[0].shape[3] * inputs[0].shape[4]
        else:
            voxels = output.shape[2] * output.shape[3] * output.shape[4]
        flops += 2.0 * module.in_channels * module.out_channels // module.groups * k * voxels

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv3d, torch.nn.ConvTranspose3d)):
            module.register_forward_hook(hook)
    grid = probe if spec.learned_upsampling else 2 * probe
    channels = 2 if spec.needs_t2w else 1
    with torch.no_grad():
        model(torch.zeros(1, channels, grid, grid, grid))
    return flops * (size / probe) ** 3  # convolution cost is linear in the voxel count


def worker(method: str, mode: str, size: int, device: str, threads: int) -> dict:
    """One measured case (run in a fresh process)."""
    import numpy as np
    import torch

    from bids_sr.inference import super_resolve_network
    from bids_sr.models.registry import get_spec
    from bids_sr.models.weights import save_weights

    torch.set_num_threads(threads)
    spec = get_spec(method)
    config = config_for(method)
    rng = np.random.default_rng(0)
    lr = rng.random((size, size, size), dtype=np.float32)
    reference = rng.random((2 * size,) * 3, dtype=np.float32) if spec.needs_t2w else None
    with tempfile.TemporaryDirectory() as tmp:
        weights = save_weights(
            spec.build(config),
            Path(tmp) / "w.safetensors",
            method=method,
            config=config,
            factors=(2, 2, 2),
            card={},
        )
        tile = None if mode == "tiled" else 4 * size
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        hr, report = super_resolve_network(
            lr,
            (2.0, 2.0, 2.0),
            method,
            weights=str(weights),
            reference=reference,
            device=device,
            tile_size=tile,
        )
        if report["device"].startswith("cuda"):
            torch.cuda.synchronize()
        wall = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak = report["peak_memory_mb"] if report["device"].startswith("cuda") else peak_rss - base_rss
    return {
        "wall_s": wall,
        "peak_mb": peak,
        "tiles": report["tiles"],
        "tile": report["tile_size"],
        "device": report["device"],
        "shape": list(hr.shape),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--size", type=int, default=128, help="LR edge (output is 2× that)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument(
        "--modes", nargs="+", default=["tiled", "whole"], choices=("tiled", "whole")
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "MODE"), help=argparse.SUPPRESS)
    bench.add_json_argument(parser, RESULTS / "inference.json")
    args = parser.parse_args(argv)
    if args.worker:
        method, mode = args.worker
        print(json.dumps(worker(method, mode, args.size, args.device, args.threads)))
        return 0

    out = args.size * 2
    print(f"device={args.device} threads={args.threads} LR {args.size}³ → HR {out}³ (×2)")
    header = (
        f"{'method':<12} {'mode':<6} {'tiles':>5} {'tile':>5} {'wall s':>8} "
        f"{'peak MB':>9} {'GFLOP':>8} {'GFLOP/s':>8} {'tiled/whole':>11}"
    )
    print(header)
    print("-" * len(header))
    measured = []
    for method in args.methods:
        gflop = count_flops(method, args.size) / 1e9
        times = {}
        for mode in args.modes:
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                mode,
                "--size",
                str(args.size),
                "--device",
                args.device,
                "--threads",
                str(args.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
                print(f"{method:<12} {mode:<6} failed: {tail[0]}")
                measured.append({"method": method, "mode": mode, "error": tail[0]})
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            measured.append({"method": method, "mode": mode, "gflop": gflop, **r})
            times[mode] = r["wall_s"]
            ratio = ""
            if mode == "whole" and "tiled" in times:
                ratio = f"{times['tiled'] / r['wall_s']:.2f}"
            print(
                f"{method:<12} {mode:<6} {r['tiles']:>5} {r['tile']:>5} {r['wall_s']:>8.2f} "
                f"{r['peak_mb']:>9.0f} {gflop:>8.1f} {gflop / r['wall_s']:>8.1f} {ratio:>11}",
                flush=True,
            )
    bench.write_record(_record(args, measured, bench.command_line(__file__, argv)), args.json)
    return 0


def _record(args: argparse.Namespace, measured: list[dict], command: str) -> dict:
    """The benchmark record: one row per network and mode."""
    rows = []
    for r in measured:
        if "error" in r:
            rows.append([r["method"], r["mode"], "—", "—", "—", "—", "—", f"failed: {r['error']}"])
            continue
        rows.append([r["method"], r["mode"], r["tiles"], r["tile"], f"{r['wall_s']:.2f}",
                     f"{r['peak_mb']:.0f}", f"{r['gflop']:.1f}",
                     f"{r['gflop'] / r['wall_s']:.1f}"])  # fmt: skip
    out = args.size * 2
    description = (
        f"`benchmarks/inference.py`: each network (untrained: speed does not depend on the "
        f"weights) super-resolves a random {args.size}³ volume ×2 to {out}³ on "
        f"`{args.device}` with {args.threads} torch thread(s), tiled (the registry's default "
        "tile) and as one whole-volume pass, each case in a fresh process so the peak memory "
        "is its own (CPU: growth of the resident set; CUDA: `max_memory_allocated`). GFLOP "
        "are counted from the convolutions for the whole-volume workload, so the tiled "
        "GFLOP/s counts useful work only."
    )
    columns = ["method", "mode", "tiles", "tile", "wall (s)", "peak (MB)", "GFLOP", "GFLOP/s"]
    return bench.make_record("inference", title=f"Network inference, {args.size}³ → {out}³ "
                       f"({args.device})", description=description,
                       tables=[bench.table(columns, rows)], figures=measured,
                       command=command)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
