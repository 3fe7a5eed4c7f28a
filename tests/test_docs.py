"""The user-facing documents: a short README, a docs site whose pages exist, citations that
agree with each other. (``make docs`` builds the site with ``--strict``: broken links and
anchors fail there.)"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DOI = re.compile(r"10\.\d{4,9}/[^\s)\]`|]+")


def _citation() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))


def test_readme_is_a_short_user_guide():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    text = "\n".join(lines)
    for command in ("make demo", "make test", "make test-all", "make docs"):
        assert command in text
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "dated results belong in CHANGES.md"


def test_readme_links_to_files_that_exist():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(((?!https?://)[^)#\s]+)(?:#[^)]*)?\)", text)
    assert targets
    for target in targets:
        assert (REPO / target).exists(), target


def test_every_page_in_the_site_navigation_exists():
    config = yaml.load((REPO / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    pages = [page for entry in config["nav"] for page in entry.values()]
    assert {"usage.md", "outputs.md", "methods.md", "models.md", "benchmarks.md", "hpc.md",
            "training.md", "api.md", "troubleshooting.md", "references.md",
            "changes.md"} <= set(pages)  # fmt: skip
    for page in pages:
        assert (REPO / "docs" / page).is_file(), page
    assert sorted(p.name for p in (REPO / "docs").glob("*.md")) == sorted(pages)


def test_citation_file_is_cff_1_2_with_the_methods_references():
    cff = _citation()
    assert cff["cff-version"] == "1.2.0"
    assert cff["type"] == "software" and cff["title"] == "bids_sr" and cff["authors"]
    from bids_sr.__about__ import __version__

    assert str(cff["version"]) == __version__
    for reference in cff["references"]:
        assert reference["type"] and reference["title"] and reference["authors"]
        assert DOI.fullmatch(str(reference["doi"])), reference["doi"]


def test_citation_dois_are_on_the_references_page_and_in_the_readme():
    dois = {str(r["doi"]) for r in _citation()["references"]}
    references = (REPO / "docs" / "references.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert dois <= set(DOI.findall(references))
    assert dois <= set(DOI.findall(readme))
    # each DOI on the page links to itself
    for doi in DOI.findall(references):
        assert f"[{doi}](https://doi.org/{doi})" in references


def _hooks():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mkdocs_hooks", REPO / "scripts/mkdocs_hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_usage_page_reference_lists_every_option_of_the_parser():
    from bids_sr.cli.parser import build_parser

    hooks = _hooks()
    usage = (REPO / "docs" / "usage.md").read_text(encoding="utf-8")
    assert "<!-- cli-options -->" in usage
    rendered = hooks.on_page_markdown(usage)
    assert "<!-- cli-options -->" not in rendered
    for action in build_parser()._actions:
        for option in action.option_strings:
            assert f"`{option}`" in rendered, option


def test_api_page_shows_each_interface_s_inputs_and_outputs():
    hooks = _hooks()
    api = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
    rendered = hooks.on_page_markdown(api)
    assert "<!-- nipype-spec" not in rendered
    from bids_sr.interfaces.superresolve import SuperResolve

    for name in SuperResolve().inputs.copyable_trait_names():
        assert f"| `{name}` |" in rendered, name
    assert "| `out_file` | `File` |" in rendered
