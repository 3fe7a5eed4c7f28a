#!/usr/bin/env bash
# Prepare, on the development machine, what scripts/gpu_check.sh needs on a GPU machine that
# cannot reach a package index or ../shared: the wheels its Python lacks (nibabel) in .whl/,
# and one real clinical 2D scan in .gpudata/ (both ignored by git; carry them to the device).
#   bash scripts/prepare_gpu_check.sh [SCAN]
set -euo pipefail
cd "$(dirname "$0")/.."
scan="${1:-../shared/data/clinical_thick_slice/sub-03/ses-2/anat/sub-03_ses-2_T1w.nii.gz}"
for ignored in /.whl/ /.gpudata/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> "$(git rev-parse --git-path info/exclude)"
done
mkdir -p .whl .gpudata
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 --platform any -d .whl nibabel
if [ -f "$scan" ]; then
    cp "$scan" .gpudata/clinical_T1w.nii.gz
else
    echo "no clinical scan at $scan: gpu_check.sh will skip the selfsr timing" >&2
fi
ls -l .whl .gpudata
