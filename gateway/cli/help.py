"""How ``--help`` lists a group's commands: each with the whole first sentence of its docstring.

Click cuts each description to fit one line of the listing and ends it with "..." (at 80 columns,
most of them). The listing is where a newcomer learns what each command is for, so here the
sentence is kept whole and wrapped under its command instead.
"""
from __future__ import annotations

import sys

import click


class Group(click.Group):
    """A click group whose command listing shows whole one-sentence descriptions."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, command.get_short_help_str(limit=sys.maxsize)) for name in self.list_commands(ctx)
                if (command := self.get_command(ctx, name)) is not None and not command.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
