#!/usr/bin/env bash
# Build the CPU variant of the bids_sr image here, with podman, from a local Debian base.
#
#   make image            # or: scripts/build_image.sh
#
# Why not `docker build`: these machines have no Docker engine and reach no container
# registry, but they reach the Debian mirror and PyPI. So the script
#   1. installs podman, runc and debootstrap when missing (Debian/Ubuntu, as root);
#   2. makes the base once: `debootstrap --variant=minbase` of Debian with python3 and
#      python3-venv, imported as localhost/debian-python:<suite> (skipped when it exists);
#   3. builds the Dockerfile's CPU variant on it, as localhost/bids_sr:<version>-cpu, with
#      podman's layer cache (a second run with unchanged sources takes seconds); the builder
#      stage is tagged too (<tag>-builder) so that its cache survives step 4;
#   4. removes the images these two tags named before the build, now untagged, with their
#      untagged parents: each rebuild after a source change would otherwise leave about
#      5 GB behind (2026-12-06: 131 such images, 42 GB, filled the CI machine's disk);
#   5. prints the image's size.
# runc, not crun: crun fails under this kernel's hybrid cgroup mode; podman's default ulimits
# must be cleared there too (default_ulimits = [] in /etc/containers/containers.conf, written
# when that file is absent).
#
# The builder's pip sees this machine's pip configuration: the configuration files, and every
# local folder or file they name (a wheel folder, file:// indexes, a constraints file), are
# mounted read-only into the build, so the local CPU build of torch is installed instead of a
# download. Elsewhere torch comes from the PyTorch CPU index as in a `docker build`.
#
# Settings (environment): BIDS_SR_BASE_SUITE (bookworm: Python 3.11, the Python of the local
# torch wheel; trixie: Python 3.13), DEBIAN_MIRROR, BIDS_SR_IMAGE (the tag).
set -euo pipefail
cd "$(dirname "$0")/.."

suite=${BIDS_SR_BASE_SUITE:-bookworm}
case "$suite" in
    bookworm) python_version=3.11 ;;
    trixie) python_version=3.13 ;;
    *) echo "build_image.sh: unknown BIDS_SR_BASE_SUITE '$suite' (bookworm or trixie)" >&2; exit 64 ;;
esac
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' bids_sr/__about__.py)
base=localhost/debian-python:$suite
image=${BIDS_SR_IMAGE:-localhost/bids_sr:$version-cpu}
builder_image=$image-builder
podman=(podman --runtime runc)

# 1. tools
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "build_image.sh: ${missing[*]} missing; install them (root, apt-get) or use docker build" >&2
        exit 69
    fi
    echo "== installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap
fi
export PATH=$PATH:/usr/sbin
conf=/etc/containers/containers.conf
if [ ! -e "$conf" ]; then
    mkdir -p "$(dirname "$conf")"
    printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' > "$conf"
    echo "== wrote $conf (default_ulimits = [], runtime = runc)"
elif ! grep -q '^ *default_ulimits *= *\[ *\]' "$conf"; then
    echo "build_image.sh: warning: $conf does not clear default_ulimits; if containers fail to" \
         "start with a ulimit error, add 'default_ulimits = []' to its [containers] table" >&2
fi

# 2. the local base (once)
if "${podman[@]}" image exists "$base"; then
    echo "== base $base exists"
else
    echo "== making $base (debootstrap $suite minbase + python3 from $mirror)"
    rootfs=$(mktemp -d /var/tmp/bids_sr_rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$rootfs" "$mirror" \
        > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "${podman[@]}" import --quiet - "$base" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
fi

# 3. the build, with this machine's pip configuration and the folders it names
mounts=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
build_args=()
if command -v python3 >/dev/null && python3 -m pip --version >/dev/null 2>&1; then
    # pip's effective settings here (files and PIP_* variables merged) become the build's
    # /etc/pip.conf; every absolute path they name is mounted read-only at the same place
    # (for a file:// index, its parent: the index's pages link to ../../files/...).
    pip_conf=$(mktemp /var/tmp/bids_sr_pip.XXXXXX.conf)
    trap 'rm -f "$pip_conf"' EXIT
    python3 - "$pip_conf" > "$pip_conf.paths" <<'PY'
import configparser, os, subprocess, sys
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                        capture_output=True, text=True).stdout.splitlines()
settings = {}
for line in sorted(listed, key=lambda l: l.startswith(":env:")):  # variables win
    key, _, value = line.partition("=")
    section, _, name = key.rpartition(".")
    section = "global" if section in (":env:", "") else section
    settings.setdefault(section, {})[name] = value.strip("'\"")
config = configparser.ConfigParser()
config.read_dict(settings)
with open(sys.argv[1], "w") as handle:
    config.write(handle)
paths = set()
for values in settings.values():
    for word in " ".join(values.values()).split():
        if word.startswith("file:///"):
            paths.add(os.path.dirname(word[len("file://"):].rstrip("/")))
        elif word.startswith("/"):
            paths.add(word)
print("\n".join(sorted(p for p in paths if os.path.exists(p))))
PY
    mounts+=(-v "$pip_conf:/etc/pip.conf:ro")
    while IFS= read -r path; do
        [ -n "$path" ] && mounts+=(-v "$path:$path:ro")
    done < "$pip_conf.paths"
    rm -f "$pip_conf.paths"
    extra=$(sed -n 's/^extra-index-url = //p' "$pip_conf")
    [ -n "$extra" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$extra")
fi

# the images the tags name now (none on a first build), for step 4
previous=()
for tag in "$image" "$builder_image"; do
    id=$("${podman[@]}" image inspect --format '{{.Id}}' "$tag" 2>/dev/null) && previous+=("$id")
done

echo "== building $image"
start=$(date +%s)
build=("${podman[@]}" build --network host "${mounts[@]}"
    --build-arg VARIANT=cpu
    --build-arg CPU_BASE="$base"
    --build-arg PYTHON_VERSION="$python_version"
    --build-arg VERSION="$version"
    "${build_args[@]}")
"${build[@]}" --target builder --tag "$builder_image" .
"${build[@]}" --tag "$image" .
echo "== built $image in $(( $(date +%s) - start )) s"

# 4. the previous build's images, when the tags have moved on (not when a container uses one)
for id in "${previous[@]}"; do
    tags=$("${podman[@]}" image inspect --format '{{len .RepoTags}}' "$id" 2>/dev/null) || continue
    if [ "$tags" = 0 ]; then
        "${podman[@]}" rmi "$id" >/dev/null \
            && echo "== removed the previous build's image ${id:0:12}" \
            || echo "build_image.sh: warning: could not remove the previous image ${id:0:12}" >&2
    fi
done

# 5. its size
"${podman[@]}" images --format '{{.Repository}}:{{.Tag}}  {{.Size}}' "$image"
