"""The Boutiques descriptor of the BIDS App, generated from the argparse parser.

Platforms such as CBRAIN and ``bosh exec`` run tools from a Boutiques descriptor. Writing it
by hand lets it drift from the command line; here every input is derived from
:func:`bids_sr.cli.parser.build_parser` (ids, types, flags, choices, defaults, lists), and a
test checks that the committed ``bids_sr/data/boutiques.json`` equals a fresh generation.

Regenerate after changing the parser::

    python -m bids_sr.cli.boutiques bids_sr/data/boutiques.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bids_sr.__about__ import __url__, __version__
from bids_sr.cli.parser import build_parser
from bids_sr.errors import EXIT_DESCRIPTIONS

SCHEMA_VERSION = "0.5"
DOCKER_IMAGE = f"bids-sr/bids_sr:{__version__}-cuda"
DESCRIPTOR_PATH = Path(__file__).parents[1] / "data" / "boutiques.json"

# Defaults that depend on the machine the parser is built on (os.cpu_count()); putting them
# in the descriptor would make it differ between machines and pin a value the app computes.
MACHINE_DEPENDENT_DEFAULTS = frozenset({"nprocs"})

# Positional folders: the input dataset must exist (File, so bosh mounts it); the output
# folder is created by the app (String).
_POSITIONAL_TYPES = {"bids_dir": "File", "output_dir": "String"}

# argparse `type=` callables by name → Boutiques type and numeric constraints.
_TYPE_RULES: dict[str, dict[str, Any]] = {
    "str": {"type": "String"},
    "int": {"type": "Number", "integer": True},
    "float": {"type": "Number"},
    "_positive_int": {"type": "Number", "integer": True, "minimum": 1},
    "_positive_float": {"type": "Number", "minimum": 0, "exclusive-minimum": True},
    "_factor": {"type": "Number", "minimum": 1},
    "_mem_gb": {"type": "Number", "minimum": 1},  # bids_sr.cli.parser.MIN_MEM_GB
    "_overlap": {"type": "Number", "minimum": 0, "maximum": 0.9},
    "_existing_file": {"type": "File"},
    "_existing_dir": {"type": "File"},  # Boutiques File covers folders
    "Path": {"type": "String"},  # folders the app creates (work dir, database dir)
}


_FLAG_ACTIONS = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._CountAction)


def input_id(action: argparse.Action) -> str:
    """The input's id: the argparse ``dest``, except for a flag, which is named by what it
    does when set (``--no-data-consistency`` → ``no_data_consistency``, not its
    ``data_consistency`` dest: a platform's "Data consistency: true" would turn it off)."""
    if isinstance(action, _FLAG_ACTIONS):
        return _flag(action).lstrip("-").replace("-", "_")
    return action.dest


_WORDS = {
    "bids": "BIDS",
    "dir": "directory",
    "omp": "OMP",
    "gb": "(GB)",
    "mem": "memory",
    "nprocs": "processes",
}


def _name(action: argparse.Action) -> str:
    """A human-readable name from the input's id: ``bids_dir`` → 'BIDS directory',
    ``mem_gb`` → 'Memory (GB)', ``no_data_consistency`` → 'No data consistency'."""
    words = [_WORDS.get(word, word) for word in input_id(action).split("_")]
    text = " ".join(words)
    return text[0].upper() + text[1:]


def _value_key(action: argparse.Action) -> str:
    return f"[{input_id(action).upper()}]"


def _flag(action: argparse.Action) -> str:
    """The long option if there is one (``--work-dir`` rather than ``-w``)."""
    longs = [opt for opt in action.option_strings if opt.startswith("--")]
    return (longs or action.option_strings)[0]


def _type_rule(action: argparse.Action) -> dict[str, Any]:
    if action.dest in _POSITIONAL_TYPES and not action.option_strings:
        return {"type": _POSITIONAL_TYPES[action.dest]}
    name = getattr(action.type, "__name__", "str") if action.type is not None else "str"
    if name not in _TYPE_RULES:
        raise ValueError(
            f"argument {action.dest!r}: no Boutiques type for argparse type {name!r}; "
            "add it to bids_sr.cli.boutiques._TYPE_RULES"
        )
    return dict(_TYPE_RULES[name])


def _is_list(action: argparse.Action) -> bool:
    return action.nargs in ("+", "*") or (isinstance(action.nargs, int) and action.nargs > 1)


def _default(action: argparse.Action) -> Any:
    """A default worth stating: fixed, plain, and not machine dependent; else None. A list
    input's default is a list (argparse's ``--method`` default is the string 'auto', which
    Boutiques rejects for a list input: ``'auto' is not of type 'array'``)."""
    value = action.default
    if value is None or value is argparse.SUPPRESS or action.dest in MACHINE_DEPENDENT_DEFAULTS:
        return None
    values = list(value) if isinstance(value, list | tuple) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, str | int | float)
                         for v in values):  # fmt: skip
        return None
    if _is_list(action):
        return values
    return None if isinstance(value, list | tuple) else value


def describe_action(action: argparse.Action) -> dict[str, Any]:
    """One Boutiques input for one argparse action."""
    entry: dict[str, Any] = {
        "id": input_id(action),
        "name": _name(action),
        "description": (action.help or "").strip(),
        "value-key": _value_key(action),
        "optional": bool(action.option_strings) and not action.required,
    }
    if action.option_strings:
        entry["command-line-flag"] = _flag(action)
    if isinstance(action, _FLAG_ACTIONS):
        entry["type"] = "Flag"
        if isinstance(action, argparse._CountAction):
            entry["description"] += " (the flag given once; repeat it on the command line)"
        return entry
    if action.nargs == 0 or action.const is not None:
        raise ValueError(f"argument {action.dest!r}: unsupported argparse action {action}")
    entry.update(_type_rule(action))
    if action.choices is not None:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*"):
        entry["list"] = True
        if action.nargs == "+":
            entry["min-list-entries"] = 1
    elif isinstance(action.nargs, int) and action.nargs > 1:
        entry.update({"list": True, "min-list-entries": action.nargs})
        entry["max-list-entries"] = action.nargs
    default = _default(action)
    if default is not None:
        entry["default-value"] = default
    return entry


def _inputs(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    skip = (argparse._HelpAction, argparse._VersionAction)
    return [action for action in parser._actions if not isinstance(action, skip)]


def _groups(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    groups = []
    for group in parser._action_groups:
        members = [input_id(a) for a in group._group_actions if a in _inputs(parser)]
        if not members or group.title in ("positional arguments", "options"):
            continue
        group_id = "".join(c if c.isalnum() else "_" for c in group.title.lower())
        groups.append({"id": group_id, "name": group.title, "members": members})
    return groups


def generate_descriptor(parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The Boutiques descriptor (a JSON-ready dict) for ``parser`` (default: the app's)."""
    parser = parser or build_parser()
    actions = _inputs(parser)
    inputs = [describe_action(action) for action in actions]
    keys = " ".join(entry["value-key"] for entry in inputs)
    return {
        "name": parser.prog,
        "tool-version": __version__,
        "description": parser.description,
        "author": "bids_sr developers",
        "url": __url__,
        "schema-version": SCHEMA_VERSION,
        "command-line": f"{parser.prog} {keys}",
        "container-image": {"type": "docker", "image": DOCKER_IMAGE, "entrypoint": True},
        "inputs": inputs,
        "groups": _groups(parser),
        "output-files": [
            {
                "id": "derivatives_dataset",
                "name": "Derivatives dataset",
                "description": "the BIDS derivatives folder: super-resolved images, sidecars, "
                "reports and logs",
                "path-template": "[OUTPUT_DIR]",
                "optional": False,
            },
            {
                "id": "dataset_description",
                "name": "Dataset description",
                "description": "dataset_description.json of the derivatives (DatasetType "
                "'derivative', GeneratedBy with the container)",
                "path-template": "[OUTPUT_DIR]/dataset_description.json",
                "optional": False,
            },
            {
                "id": "group_summary",
                "name": "Group summary",
                "description": "group level: one row per super-resolved image",
                "path-template": "[OUTPUT_DIR]/group_summary.tsv",
                "optional": True,
            },
        ],
        "suggested-resources": {"cpu-cores": 4, "ram": 8, "walltime-estimate": 3600},
        "tags": {"domain": ["neuroinformatics", "mri", "super-resolution"], "bids-app": True},
        "error-codes": [
            {"code": code, "description": description}
            for code, description in EXIT_DESCRIPTIONS.items()
        ],
    }


def dumps(descriptor: dict[str, Any]) -> str:
    """The descriptor as committed: 2-space indented JSON, trailing newline."""
    return json.dumps(descriptor, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the descriptor to the path given (default: the packaged one)."""
    parser = argparse.ArgumentParser(prog="python -m bids_sr.cli.boutiques",
                                     description="Write the Boutiques descriptor of bids_sr, "
                                     "generated from its command-line parser.")  # fmt: skip
    parser.add_argument("output", nargs="?", type=Path, default=DESCRIPTOR_PATH,
                        help=f"where to write it (default: {DESCRIPTOR_PATH.name} in the package)")
    target = parser.parse_args(sys.argv[1:] if argv is None else argv).output
    target.write_text(dumps(generate_descriptor()))
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
