"""``--help`` listings show what each command is for in whole sentences, never cut short with "..."."""
from __future__ import annotations

import re
import sys

import click
from click.testing import CliRunner

from gateway.cli import main


def _words(text: str) -> str:
    """Text as the listing wraps it: whitespace runs as one space, a hyphen at a line break kept."""
    return re.sub(r"-\s+", "-", " ".join(text.split()))


def _groups() -> list[tuple[list[str], click.Group]]:
    groups: list[tuple[list[str], click.Group]] = [([], main)]
    for name in main.list_commands(None):
        command = main.get_command(None, name)
        if isinstance(command, click.Group):
            groups.append(([name], command))
    return groups


def test_every_listing_shows_each_description_whole():
    runner = CliRunner()
    for path, group in _groups():
        shown = runner.invoke(main, [*path, "--help"], terminal_width=80)
        assert shown.exit_code == 0, shown.output
        listing = _words(shown.output.split("Commands:", 1)[1])
        for name in group.list_commands(None):
            described = group.get_command(None, name).get_short_help_str(limit=sys.maxsize)
            assert _words(described) in listing, f"{' '.join([*path, name])}: {described!r} not in\n{shown.output}"
