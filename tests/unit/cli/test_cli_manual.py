"""Every subcommand's --help reads as a short manual page; --version answers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qgadash import __version__
from qgadash.cli.parser import build_parser


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._subparsers._group_actions)  # type: ignore[union-attr]
    assert isinstance(action.choices, dict)  # a subparsers action: name -> parser
    return sorted(action.choices)


def test_serve_and_metrics_are_subcommands() -> None:
    assert {"serve", "metrics"} <= set(subcommands())


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_help_says_what_it_does(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: qgadash {command}")
    description = text.split("\n\n")[1]
    assert len(description.split()) >= 8, f"{command} --help has no description"


@pytest.mark.parametrize("command", ["status", "freeze", "serve", "metrics"])
def test_manual_pages_have_examples_and_exit_status(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "example" in text and "exit status" in text
    assert all(len(line) <= 100 for line in text.splitlines())


def test_version_of_the_installed_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qgadash", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.strip() == f"qgadash {__version__}"
