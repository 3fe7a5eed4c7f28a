"""MkDocs hooks: parts of the documentation filled in from the code at build time.

A page holds a marker comment and the build replaces it, so the option tables and the
Nipype input/output tables cannot drift from the parsers and specs they describe:

- ``<!-- cli-options -->``: every option of ``bids_sr`` (bids_sr.cli.parser), by group;
- ``<!-- train-options -->``: every option of ``bids_sr-train`` (bids_sr.training.cli);
- ``<!-- train-validate-options -->``: every option of ``bids_sr-train validate``;
- ``<!-- nipype-spec: package.module.Interface -->``: the interface's inputs and outputs.

A marker that names nothing importable fails the build (``make docs`` runs ``--strict``).
"""

from __future__ import annotations

import argparse
import importlib
import re
from typing import Any

MARKER = re.compile(
    r"<!-- (cli-options|train-options|train-validate-options|nipype-spec: [\w.]+) -->")
#: Defaults computed on the machine that builds the docs, shown as what they mean instead.
MACHINE_DEFAULTS = {"nprocs": "the number of CPUs",
                    "shared": "`../shared/data` beside the repository"}


def _cell(text: Any) -> str:
    """Text fit for a markdown table cell: no pipes, no raw HTML, one line."""
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("|", "\\|").replace("\n", " "))  # fmt: skip


def _default(action: argparse.Action) -> str:
    if action.dest in MACHINE_DEFAULTS:
        return MACHINE_DEFAULTS[action.dest]
    value = action.default
    if value is None or value is argparse.SUPPRESS or isinstance(value, bool):
        return ""
    return f"`{value}`"


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar:
        name = action.metavar
    elif action.choices:
        name = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        name = action.dest.upper()
    if action.nargs in ("+", "*"):
        name += " ..."
    return f"`{name}`"


def options_markdown(parser: argparse.ArgumentParser) -> str:
    """Every option of ``parser`` as one table per argument group."""
    out = []
    for group in parser._action_groups:  # argparse keeps its groups only here
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS]
        if not actions:
            continue
        title = group.title or "options"
        out += [f"#### {title[0].upper()}{title[1:]}", ""]
        if group.description:
            out += [_cell(group.description), ""]
        out += ["| option | argument | default | what it does |", "|---|---|---|---|"]
        for action in actions:
            names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
            help_text = (action.help or "").replace("%(default)s", str(action.default))
            out.append(f"| {names} | {_argument(action)} | {_default(action)} | "
                       f"{_cell(help_text)} |")  # fmt: skip
        out.append("")
    return "\n".join(out)


def _trait_type(trait) -> str:
    handler = trait.trait_type
    name = type(handler).__name__
    if name == "Enum" and getattr(handler, "values", None):
        return "one of " + ", ".join(f"`{v}`" for v in handler.values)
    return f"`{name}`"


def spec_markdown(spec_class, *, inputs: bool) -> str:
    """One Nipype spec (its user-facing traits) as a markdown table."""
    spec = spec_class()
    names = sorted(set(spec.visible_traits()) - {"trait_added", "trait_modified"})
    header = "| input | type | required | default | description |" if inputs else \
        "| output | type | description |"  # fmt: skip
    lines = [header, "|---|---|---|---|---|" if inputs else "|---|---|---|"]
    for name in names:
        trait = spec.trait(name)
        desc = _cell(trait.desc or "")
        if inputs:
            default = f"`{trait.default!r}`" if trait.usedefault else ""
            required = "yes" if trait.mandatory else ""
            lines.append(f"| `{name}` | {_cell(_trait_type(trait))} | {required} | "
                         f"{_cell(default)} | {desc} |")  # fmt: skip
        else:
            lines.append(f"| `{name}` | {_cell(_trait_type(trait))} | {desc} |")
    return "\n".join(lines)


def interface_markdown(dotted: str) -> str:
    """The inputs and outputs of the Nipype interface ``package.module.Class``."""
    module_name, _, class_name = dotted.rpartition(".")
    interface = getattr(importlib.import_module(module_name), class_name)
    return "\n".join([
        "**Inputs**", "", spec_markdown(interface.input_spec, inputs=True), "",
        "**Outputs**", "", spec_markdown(interface.output_spec, inputs=False), "",
    ])  # fmt: skip


def _render(what: str) -> str:
    if what == "cli-options":
        from bids_sr.cli.parser import build_parser

        return options_markdown(build_parser())
    if what == "train-options":
        from bids_sr.training.cli import build_parser as build_train_parser

        return options_markdown(build_train_parser())
    if what == "train-validate-options":
        from bids_sr.training.cli import build_validate_parser

        return options_markdown(build_validate_parser())
    return interface_markdown(what.split(":", 1)[1].strip())


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: replace each marker of the page by what it names."""
    return MARKER.sub(lambda match: _render(match.group(1)), markdown)
