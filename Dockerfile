# syntax=docker/dockerfile:1
#
# bids_sr BIDS App image.
#
#   docker build -t bids-sr/bids_sr:0.1.0 .                               # CUDA (default)
#   docker build --build-arg VARIANT=cpu -t bids-sr/bids_sr:0.1.0-cpu .   # CPU only, smaller
#   make image      # CPU variant with podman from a local Debian base (scripts/build_image.sh)
#   docker run --rm --gpus all -v /data:/data:ro -v /out:/out bids-sr/bids_sr:0.1.0 \
#       /data /out participant --method srrecnn --scale 2
#
# The base images are build arguments (CUDA_BASE, CPU_BASE: any Debian or Ubuntu image);
# the builder starts from the same base as the final image, so the venv's interpreter is the
# runtime's. What differs between bases is an argument too: PYTHON_VERSION, the version of
# the distribution's python3 package (3.12 on Ubuntu 24.04, 3.11 on Debian 12, 3.13 on
# Debian 13). `builder` makes a virtual environment in /opt/venv (pip, compilers and the
# wheel build happen only there); the final stage copies that venv onto the base with
# nothing but Python. The CUDA variant's base brings the CUDA runtime libraries CuPy loads; PyTorch's
# CUDA wheel brings its own cuDNN, so the base needs no cuDNN. GPU drivers never go into the
# image: `docker run --gpus` / `apptainer run --nv` mount the host's.
# The `pip install` line of the builder is executed by tests/test_container.py in a fresh venv.

ARG VARIANT=cuda
ARG CUDA_BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG CPU_BASE=ubuntu:24.04
ARG PYTHON_VERSION=3.12

# ---------------------------------------------------------------------------------------------
# runtime: the chosen base, its distribution's Python (no compilers) and the unprivileged
# user. Both the builder and the final image start here.
# hadolint ignore=DL3006
FROM ${CUDA_BASE} AS runtime-cuda
# hadolint ignore=DL3006
FROM ${CPU_BASE} AS runtime-cpu

# hadolint ignore=DL3006
FROM runtime-${VARIANT} AS runtime
ARG PYTHON_VERSION
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3=${PYTHON_VERSION}.* \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 bids \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin bids

# ---------------------------------------------------------------------------------------------
# builder: a venv with torch (CUDA or CPU build), the package and, for CUDA, CuPy.
FROM runtime AS builder-base
ARG PYTHON_VERSION
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3-venv=${PYTHON_VERSION}.* python3-dev=${PYTHON_VERSION}.* build-essential=12.* \
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
# torch's CPU-only build: no CUDA libraries pulled in (about 4 GB smaller). TORCH_INDEX_URL
# names another index (or several, space-separated) holding it, e.g. a local wheel folder
# mounted into the build (scripts/build_image.sh does that).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_EXTRA_INDEX_URL=${TORCH_INDEX_URL} \
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
# final: the runtime stage plus the venv, nothing else.
FROM runtime AS final
ARG VARIANT
ARG VERSION=0.1.0
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
