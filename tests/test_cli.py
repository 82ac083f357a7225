"""The ``itb`` command lists only subcommands that work, and each one answers ``--help``."""

from __future__ import annotations

import pytest

from hil import cli


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._subparsers._group_actions if a.dest == "command")  # type: ignore[union-attr]
    return sorted(action.choices)


def test_top_level_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main([name, "--help"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip()
