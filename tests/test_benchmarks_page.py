"""The documentation's Benchmarks page is generated from the benchmarks' records.

``docs/benchmarks.md`` must be exactly what ``python -m bids_sr.benchmarks_page`` renders
from ``benchmarks/results/*.json``, and every record carries the date, commit, machine and
command its figures came from. The benchmark and experiment scripts import the installed
package: no ``sys.path`` edits, no hard-coded interpreter paths.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bids_sr.benchmark_record import (
    REQUIRED_KEYS,
    command_line,
    git_commit,
    machine,
    make_record,
    table,
    write_record,
)
from bids_sr.benchmarks_page import (
    COMMAND,
    RESULTS_DIR,
    load_records,
    main,
    render_benchmarks_page,
    render_table,
)

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "benchmarks.md"
RECORDS = sorted(RESULTS_DIR.glob("*.json"))


def test_committed_benchmarks_page_equals_what_the_records_render():
    assert PAGE.is_file(), f"{PAGE} is missing: run `{COMMAND}`"
    assert PAGE.read_text(encoding="utf-8") == render_benchmarks_page(RESULTS_DIR), (
        f"docs/benchmarks.md differs from benchmarks/results: run `{COMMAND}`"
    )


@pytest.mark.parametrize("path", RECORDS, ids=[p.name for p in RECORDS])
def test_every_record_says_when_where_and_how(path: Path):
    record = json.loads(path.read_text(encoding="utf-8"))
    assert set(REQUIRED_KEYS) <= set(record)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}Z)?", record["date"])
    assert re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", record["commit"])
    assert record["machine"]["description"]
    assert record["command"].strip() and record["tables"]
    for spec in record["tables"]:
        assert spec["rows"] and all(len(row) == len(spec["columns"]) for row in spec["rows"])
    page = render_benchmarks_page(RESULTS_DIR)
    section = page[page.index(f"## {record['title']}"):]
    assert f"measured: {record['date']} at commit `{record['commit']}`" in section
    assert f"machine: {record['machine']['description']}" in section
    assert f"command: `{record['command']}`" in section
    for spec in record["tables"]:
        assert render_table(spec) in section


def test_a_changed_record_changes_the_page(tmp_path: Path):
    folder = tmp_path / "results"
    shutil.copytree(RESULTS_DIR, folder)
    assert render_benchmarks_page(folder) == render_benchmarks_page(RESULTS_DIR)
    path = folder / "evaluation.json"
    record = json.loads(path.read_text(encoding="utf-8"))
    record["tables"][0]["rows"][0][1] = "99.99 ± 0.01"
    path.write_text(json.dumps(record), encoding="utf-8")
    page = render_benchmarks_page(folder)
    assert page != render_benchmarks_page(RESULTS_DIR) and "| 99.99 ± 0.01 |" in page


def test_a_new_record_lands_on_the_page_with_its_provenance(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # fmt: skip
    """What a benchmark writes (a figure of a toy run) renders under its date, commit,
    machine and command; unknown benchmarks follow the known ones."""
    monkeypatch.chdir(REPO)
    record = make_record(
        "toy", title="Toy benchmark", description="A figure of a toy array.",
        tables=[table(["case", "wall (s)"], [["8³", 0.01]], title="toy", note="a note")],
        figures={"wall_s": 0.01}, command=command_line(__file__, ["--size", "8"]),
    )  # fmt: skip
    path = write_record(record, tmp_path / "results" / "toy.json")
    shutil.copy2(RESULTS_DIR / "evaluation.json", tmp_path / "results" / "evaluation.json")
    assert [r["benchmark"] for r in load_records(tmp_path / "results")] == ["evaluation", "toy"]
    page = render_benchmarks_page(tmp_path / "results")
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(record))
    assert record["command"].endswith("python tests/test_benchmarks_page.py --size 8")
    assert f"- machine: {machine()['description']}" in page
    assert "| case | wall (s) |\n|---|---|\n| 8³ | 0.01 |\n\na note" in page
    assert page.index("## Evaluation protocol") < page.index("## Toy benchmark")


def test_record_provenance_comes_from_this_checkout():
    commit = git_commit(REPO)
    assert commit is None or re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", commit)
    info = machine()
    assert info["logical_cpus"] >= 1 and info["python"] in info["description"]
    with pytest.raises(ValueError, match="cells for 2 columns"):
        table(["a", "b"], [["only one"]])
    with pytest.raises(ValueError, match="lacks"):
        write_record({"benchmark": "x"}, Path("never-written.json"))
    assert not Path("never-written.json").exists()


def test_only_changed_code_marks_a_commit_dirty(tmp_path: Path):
    """A record written earlier in the same session (benchmarks/results) or the page made
    from them leave the measured code at its commit; a changed source file does not."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    files = {"code.py": "x = 1\n", "benchmarks/results/a.json": "{}\n",
             "docs/benchmarks.md": "# Benchmarks\n"}  # fmt: skip
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "c"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    commit = git_commit(tmp_path)
    assert commit is not None and not commit.endswith("-dirty")
    (tmp_path / "benchmarks/results/a.json").write_text('{"changed": 1}\n')
    (tmp_path / "docs/benchmarks.md").write_text("# Benchmarks, regenerated\n")
    assert git_commit(tmp_path) == commit
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == f"{commit}-dirty"


def test_command_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "benchmarks.md"
    assert main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == render_benchmarks_page(RESULTS_DIR)
    assert main([]) == 0
    assert capsys.readouterr().out == out.read_text(encoding="utf-8")


SCRIPTS = sorted([*(REPO / "benchmarks").glob("*.py"), *(REPO / "experiments").glob("*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_scripts_import_the_installed_package(script: Path):
    text = script.read_text(encoding="utf-8")
    assert "sys.path" not in text and "PYTHONPATH" not in text
    assert not re.search(r"/tmp/venv|\.venv/bin", text)


@pytest.mark.parametrize("script", sorted((REPO / "benchmarks").glob("*.py")),
                         ids=lambda p: p.name)  # fmt: skip
def test_every_benchmark_writes_a_record(script: Path):
    text = script.read_text(encoding="utf-8")
    assert "add_json_argument(parser, RESULTS / " in text and "write_record(" in text
