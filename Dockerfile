# syntax=docker/dockerfile:1
#
# bids_sr BIDS App image.
#
#   docker build -t bids-sr/bids_sr:0.1.0 .                               # CUDA (default)
#   docker build --build-arg VARIANT=cpu -t bids-sr/bids_sr:0.1.0-cpu .   # CPU only, smaller
#   docker run --rm --gpus all -v /data:/data:ro -v /out:/out bids-sr/bids_sr:0.1.0 \
#       /data /out participant --method srrecnn --scale 2
#
# Two stages: `builder` makes a virtual environment in /opt/venv (pip, git and the wheel
# build happen only there); the final stage copies that venv onto a runtime base with nothing
# but Python. The CUDA variant's base brings the CUDA runtime libraries CuPy loads; PyTorch's
# CUDA wheel brings its own cuDNN, so the base needs no cuDNN. GPU drivers never go into the
# image: `docker run --gpus` / `apptainer run --nv` mount the host's.
# The `pip install` line of the builder is executed by tests/test_container.py in a fresh venv.

ARG VARIANT=cuda
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG CPU_BASE=ubuntu:24.04

# ---------------------------------------------------------------------------------------------
# builder: a venv with torch (CUDA or CPU build), the package and, for CUDA, CuPy.
FROM ubuntu:24.04 AS builder-base
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3=3.12.* python3-venv=3.12.* python3-dev=3.12.* build-essential=12.* \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --no-cache-dir --upgrade "pip>=24" "setuptools>=77" wheel

FROM builder-base AS builder-cuda
# torch's CUDA build matching the runtime base (cu128 ↔ CUDA 12.8) and the `gpu` extra
# (cupy-cuda12x). Change both together: --build-arg CUDA_BASE=... --build-arg TORCH_CUDA=...
ARG TORCH_CUDA=cu128
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/${TORCH_CUDA} \
    BIDS_SR_EXTRAS="[gpu]"

FROM builder-base AS builder-cpu
# torch's CPU-only build: no CUDA libraries pulled in (about 4 GB smaller).
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    BIDS_SR_EXTRAS=""

# hadolint ignore=DL3006
FROM builder-${VARIANT} AS builder
ARG TORCH_VERSION=2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bids_sr ./bids_sr
# The package is built into a wheel and installed with its data (weights, demo dataset,
# Boutiques descriptor: bids_sr/data/**). Keep this one line: the container test runs it.
RUN /opt/venv/bin/python -m pip install --no-cache-dir "torch==${TORCH_VERSION}" "/src${BIDS_SR_EXTRAS}" \
    && /opt/venv/bin/bids_sr --version

# ---------------------------------------------------------------------------------------------
# runtime bases: Python only, no compilers.
# hadolint ignore=DL3006
FROM ${CUDA_BASE} AS runtime-cuda
# hadolint ignore=DL3006
FROM ${CPU_BASE} AS runtime-cpu

# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS final
ARG VARIANT
ARG VERSION=0.1.0
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 bids \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin bids
COPY --from=builder /opt/venv /opt/venv

LABEL org.opencontainers.image.title="bids_sr" \
      org.opencontainers.image.description="BIDS App: super-resolution of anatomical brain MRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="https://github.com/bids-sr/bids_sr" \
      org.opencontainers.image.url="https://github.com/bids-sr/bids_sr" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.variant="${VARIANT}"

# One thread per library call by default so parallel Nipype nodes do not oversubscribe the
# CPUs; `--omp-nthreads` sizes each super-resolution node. MPLCONFIGDIR/HOME: writable
# even when Singularity/Apptainer runs the image read-only as the calling user.
ENV PATH=/opt/venv/bin:$PATH \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    BIDS_SR_CONTAINER_TAG="bids-sr/bids_sr:${VERSION}-${VARIANT}"

USER 10001:10001
WORKDIR /home/bids
ENTRYPOINT ["bids_sr"]
CMD ["--help"]
