"""Per method: wall time and peak memory of one participant of the demo dataset through the CLI.

Not a timed test. For each method, ``bids_sr DEMO OUT participant --participant-label 01
--method METHOD`` runs as a child process with fresh output and work folders; we report

- ``wall_s``: the whole run (start-up, pybids, Nipype, the method, writing, the report);
- ``sr_s``: the super-resolution step alone (``RunTime`` from the derivative's sidecar;
  in evaluation mode the method's ``runtime_s`` from the metrics table);
- ``peak_rss_mb``: the largest resident set of the CLI process and every process it started
  (Nipype's MultiProc workers), from ``os.wait4``'s resource usage (the same figure as
  ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` for that child alone);
- the ratio of wall time and peak memory to bspline's.

A method that cannot run (e.g. a learned method whose weights are not shipped yet) is listed
with the CLI's one-line reason instead of figures.

    python benchmarks/participant.py [--methods nearest linear bspline srrecnn ...]
        [--participant 01] [--scale 2] [--device auto|cpu|cuda] [--nprocs 1] [--evaluate]
        [--bids-dir DIR] [--json PATH]

``--bids-dir`` takes another BIDS dataset (default: the demo dataset of the installed
package). The record of the figures (:mod:`bids_sr.benchmark_record`) goes to
``benchmarks/results/participant.json`` unless ``--json PATH`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bids_sr
from bids_sr import benchmark_record as bench

DEMO = Path(bids_sr.__file__).resolve().parent / "data" / "demo"
RESULTS = Path(__file__).resolve().parent / "results"


def run_once(method: str, args: argparse.Namespace, folder: Path) -> dict:
    """Run the CLI for one method in ``folder``; return its figures or its failure."""
    out, work = folder / "out", folder / "work"
    command = [sys.executable, "-m", "bids_sr", str(args.bids_dir), str(out), "participant",
               "--participant-label", args.participant, "--method", method,
               "--scale", *[str(s) for s in args.scale], "--device", args.device,
               "--nprocs", str(args.nprocs), "-w", str(work), "--skip-bids-validation"]  # fmt: skip
    if args.evaluate:
        command.append("--evaluate")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(args.nprocs))
    err = folder / "stderr.txt"
    start = time.perf_counter()
    with open(err, "w") as handle:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=handle, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"method": method, "exit": proc.returncode, "wall_s": wall,
              "peak_rss_mb": usage.ru_maxrss / 1024}  # fmt: skip
    if proc.returncode != 0:
        lines = [line for line in err.read_text().splitlines() if "error" in line.lower()]
        result["note"] = (lines[-1] if lines else err.read_text()[-300:]).strip()
        return result
    result["sr_s"] = _sr_seconds(out, method, args.evaluate)
    return result


def _sr_seconds(out: Path, method: str, evaluate: bool) -> float | None:
    if evaluate:
        for table in out.glob("sub-*/**/*_desc-evaluation_metrics.tsv"):
            header, *rows = [line.split("\t") for line in table.read_text().splitlines()]
            for row in rows:
                record = dict(zip(header, row, strict=True))
                if record["method"] == method and record["runtime_s"] != "n/a":
                    return float(record["runtime_s"])
        return None
    times = [json.loads(p.read_text()).get("RunTime", 0.0)
             for p in out.glob(f"sub-*/**/anat/*_desc-{method}_T1w.json")]  # fmt: skip
    return sum(times) if times else None


def _table_rows(results: list[dict]) -> list[list[str]]:
    """Per method: its figures and their ratios to bspline's, or why it could not run."""
    reference = next((r for r in results if r["method"] == "bspline" and r["exit"] == 0), None)
    rows = []
    for r in results:
        if r["exit"] != 0:
            rows.append([r["method"], "—", "—", "—", "—", f"unavailable: {r['note']}"])
            continue
        sr = f"{r['sr_s']:.2f}" if r.get("sr_s") is not None else "n/a"
        ratios = ["n/a", "n/a"]
        if reference:
            ratios = [f"{r['wall_s'] / reference['wall_s']:.2f}",
                      f"{r['peak_rss_mb'] / reference['peak_rss_mb']:.2f}"]  # fmt: skip
        rows.append([r["method"], f"{r['wall_s']:.1f}", sr, f"{r['peak_rss_mb']:.0f}", *ratios])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["nearest", "linear", "bspline"])
    parser.add_argument("--participant", default="01")
    parser.add_argument("--scale", nargs="+", type=float, default=[2.0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--nprocs", type=int, default=1)
    parser.add_argument("--evaluate", action="store_true", help="time the evaluation mode")
    parser.add_argument("--bids-dir", type=Path, default=DEMO,
                        help="BIDS dataset (default: the package's demo dataset)")
    bench.add_json_argument(parser, RESULTS / "participant.json")
    args = parser.parse_args(argv)

    results = []
    for method in args.methods:
        with tempfile.TemporaryDirectory(prefix=f"bids_sr_bench_{method}_") as folder:
            result = run_once(method, args, Path(folder))
        results.append(result)
        state = "ok" if result["exit"] == 0 else f"failed ({result['exit']})"
        print(f"{method}: {state} in {result['wall_s']:.1f} s", file=sys.stderr)

    mode = "evaluation mode" if args.evaluate else "participant level"
    scale = "×".join(f"{s:g}" for s in args.scale)
    title = (f"One participant (sub-{args.participant}) through the CLI, {mode}, ×{scale}, "
             f"--device {args.device}, --nprocs {args.nprocs}")  # fmt: skip
    print(f"\n{title}")
    print(f"machine: {bench.machine()['description']}\n")
    columns = ["method", "wall_s", "sr_s", "peak_rss_mb", "wall / bspline", "memory / bspline"]
    rows = _table_rows(results)
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\nwall_s: whole CLI run; sr_s: the method alone; peak_rss_mb: largest process.")
    dataset = "the demo dataset" if args.bids_dir == DEMO else f"`{args.bids_dir.name}`"
    description = (
        f"`benchmarks/participant.py`: `bids_sr` on one participant of {dataset} per method, "
        "each as a child process with fresh output and work folders. wall_s: the whole CLI "
        "run (start-up, pybids, Nipype, the method, writing, the report); sr_s: the "
        "super-resolution step alone (`RunTime` of the sidecar; in evaluation mode the "
        "method's `runtime_s`); peak_rss_mb: the largest resident set of the CLI and the "
        "processes it started (`os.wait4`)."
    )
    bench.write_record(bench.make_record("participant", title=title, description=description,
                             tables=[bench.table(columns, rows)], figures=results,
                             command=bench.command_line(__file__, argv)), args.json)  # fmt: skip
    return 0 if any(r["exit"] == 0 for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
