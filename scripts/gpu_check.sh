#!/usr/bin/env bash
# The first thing to run on a CUDA machine: the CUDA/CuPy tests, the inference benchmark on
# the GPU, and selfsr's per-scan time on one real clinical scan (default and fast budgets),
# collected into one JSON ($OUT/gpu_check.json, else ./gpu_check.json). On a machine without
# a CUDA GPU it says so and exits 0. Prepare the wheels and the scan first where the GPU
# machine has no package index: bash scripts/prepare_gpu_check.sh (then carry .whl, .gpudata).
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch here; nothing to check"
    exit 0
fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
logs="$out/gpu_check_logs"
mkdir -p "$logs"

step() {  # step NAME COMMAND...: run it, keep its log, its exit code and wall time
    local name="$1"; shift
    local start; start=$(date +%s.%N)
    "$@" > "$logs/$name.log" 2>&1
    local rc=$?
    local end; end=$(date +%s.%N)
    echo "$name rc=$rc $(echo "$end - $start" | bc) s"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(echo "$end - $start" | bc)" >> "$logs/steps.tsv"
}

: > "$logs/steps.tsv"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$logs/gpu.txt" 2>&1
step cuda_tests "$python" -m pytest -q -rs -p no:cacheprovider tests/test_inference.py \
    tests/test_gradfilter.py -k "cuda or cupy or gpu"
step inference_benchmark "$python" benchmarks/inference.py --device cuda --size 128 \
    --json "$logs/inference.json"
if [ -f .gpudata/clinical_T1w.nii.gz ]; then
    step selfsr_time "$python" benchmarks/selfsr_time.py .gpudata/clinical_T1w.nii.gz \
        --device cuda --budgets default fast --json "$logs/selfsr_time.json"
fi
"$python" - "$logs" "$out/gpu_check.json" <<'PY'
import json, sys
from pathlib import Path
logs, target = Path(sys.argv[1]), Path(sys.argv[2])
steps = {}
for line in (logs / "steps.tsv").read_text().splitlines():
    name, rc, seconds = line.split("\t")
    text = (logs / f"{name}.log").read_text(errors="replace")
    steps[name] = {"rc": int(rc), "wall_s": round(float(seconds), 1), "tail": text[-3000:]}
result = {"gpu": (logs / "gpu.txt").read_text().strip(), "steps": steps}
timing = logs / "selfsr_time.json"
if timing.exists():
    result["selfsr_time"] = json.loads(timing.read_text())
target.write_text(json.dumps(result, indent=1))
print(f"gpu_check: results in {target}")
sys.exit(max(s["rc"] for s in steps.values()))
PY
