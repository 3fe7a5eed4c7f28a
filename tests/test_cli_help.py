"""`bids_sr --help`: each default stated once, only where there is one, and the guide options
name every method they guide."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys

from bids_sr.cli.parser import build_parser
from bids_sr.superresolve import GUIDED_METHODS


def _help_text() -> str:
    proc = subprocess.run([sys.executable, "-m", "bids_sr", "--help"], capture_output=True,
                          text=True, check=True)  # fmt: skip
    return " ".join(proc.stdout.split())  # argparse wraps lines: compare unwrapped


def _option_help(parser: argparse.ArgumentParser, option: str) -> str:
    formatter = parser._get_formatter()
    action = next(a for a in parser._actions if option in a.option_strings)
    return formatter._get_help_string(action) % {"default": action.default}


def test_help_states_each_default_once_and_no_empty_ones():
    text = _help_text()
    for empty in ("(default: None)", "(default: True)", "(default: False)"):
        assert empty not in text, empty
    assert "(default: auto)" in text  # --method, --t2w-reference, --device
    parser = build_parser()
    for action in parser._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            continue
        rendered = _option_help(parser, action.option_strings[0])
        assert len(re.findall(r"\(default", rendered, flags=re.IGNORECASE)) <= 1, rendered
    # a flag that turns something off shows no "(default: True)" of its dest
    assert "default" not in _option_help(parser, "--no-data-consistency")
    assert _option_help(parser, "--participant-label").count("default: all") == 1


def test_guide_options_name_every_guided_method():
    parser = build_parser()
    for option in ("--t2w-reference", "--reference-suffix"):
        text = " ".join(_option_help(parser, option).split())
        for method in GUIDED_METHODS:
            if option == "--t2w-reference" and not method.endswith("t2w"):
                continue  # the T2w option guides the T2w methods
            assert method in text, (option, method)
    suffix_help = _option_help(parser, "--reference-suffix")
    assert all(m in suffix_help for m in ("srrecnn-t2w", "srrecnn-flair", "selfsr-t2w",
                                           "selfsr-flair"))  # fmt: skip
