#!/usr/bin/env bash
# Install a one-machine SLURM (Debian's slurm-wlm) and MUNGE, for tests/test_slurm.py.
#
# Idempotent: when slurmctld, slurmd, sbatch and munged are already on PATH it exits at once
# without touching apt. Needs root (apt-get); exits 77 (EX_NOPERM-style "skip") when not root
# or when apt-get is unavailable, so callers can tell "cannot install" from "install failed".
set -euo pipefail

need=(slurmctld slurmd sbatch squeue sinfo scontrol munged mungekey)
missing=0
for tool in "${need[@]}"; do
    if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1; then
        missing=1
    fi
done
if [ "$missing" -eq 0 ]; then
    echo "install_slurm: slurm-wlm and munge already installed"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_slurm: not root; cannot install slurm-wlm and munge" >&2
    exit 77
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_slurm: apt-get not found (not a Debian/Ubuntu system)" >&2
    exit 77
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps out the docs and mail tooling the daemons do not need.
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
echo "install_slurm: installed $(dpkg-query -W -f='slurm-wlm ${Version}' slurm-wlm)," \
    "$(dpkg-query -W -f='munge ${Version}' munge)"
