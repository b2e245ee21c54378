"""What a new user reads first is right: `dslc --help` has a description, the main flows as
examples, and one line of help for every command and flag; the README's examples match the
files they name (issue 11, friction)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pytest

from dslc.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent

def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return action


def test_the_top_level_help_is_for_users(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "Compile `.dl` specs" in text
    assert "Thin:" not in text and "imported inside" not in text  # not the module docstring
    examples = text.split("examples:", 1)[1]
    for flow in ("dslc check ", "dslc train ", "--resume", "dslc eval ", "dslc export ",
                 "dslc run ", "dslc compile ", "dslc verify "):
        assert flow in examples, flow


def test_every_command_has_help():
    sub = _subparsers(build_parser())
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert set(helps) == set(sub.choices)
    assert all(h and h.strip() for h in helps.values()), helps


def _actions(parser: argparse.ArgumentParser, where: str):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _actions(child, f"{where} {name}")
            continue
        yield where, action


def test_every_flag_and_argument_has_one_line_of_help():
    missing = [f"{where}: {'/'.join(a.option_strings) or a.dest}"
               for where, a in _actions(build_parser(), "dslc")
               if not (a.help and a.help.strip()) or "\n" in a.help]
    assert not missing, missing


def test_compile_help_says_how_generated_files_are_named(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "<model>_model.py" in text and "shadow" in text


def test_the_readme_tiny_resnet_is_the_example_file():
    readme = (ROOT / "README.md").read_text()
    (block,) = re.findall(r"```\n# examples/tiny_resnet\.dl[^\n]*\n(.*?)```", readme, re.S)
    example = (ROOT / "examples" / "tiny_resnet.dl").read_text()
    model = example.split("\n", 1)[1].split("\ntrain tiny_resnet")[0]  # below its comment
    assert block.strip() == model.strip()


def test_the_readme_says_which_digit_the_example_image_shows():
    Image = pytest.importorskip("PIL.Image")
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    image = np.asarray(Image.open(ROOT / "examples" / "digit.png"), np.float64) * 16 / 255
    nearest = int(((digits.images - image) ** 2).sum(axis=(1, 2)).argmin())
    label = int(digits.target[nearest])
    assert f"the digit {label} " in (ROOT / "README.md").read_text()
