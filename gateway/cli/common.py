"""Options and output helpers every subcommand shares, so the CLI behaves one way throughout."""
from __future__ import annotations

import json
import sys
import unicodedata
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, Callable, Iterator

import click

from gateway import admin, filemodes
from gateway.config import Settings, SettingsError, load_settings
from gateway.registry import Store, open_store

grace_option = click.option(
    "--grace-s", "grace_s", type=float, default=None,
    help="Seconds after an hour ends before it counts as closed (default: twice the rotation interval + 300).",
)


def closed_after(settings: Settings, grace_s: float | None) -> timedelta:
    """``--grace-s`` if given, else when the settings say an hour of the trail is closed."""
    return timedelta(seconds=grace_s) if grace_s is not None else settings.hour_closed_after


data_option = click.option(
    "--data", "data_dir", type=click.Path(file_okay=False), default=None,
    help="Data directory (default: $PORTCULLIS_DATA or ./data).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")


def settings_for(data_dir: str | None, **overrides: Any) -> Settings:
    """Load settings, turning a bad setting into a one-line CLI error, and apply their file modes
    to this process (``gateway.filemodes``): every command that touches the data directory
    starts here, so whatever it writes is private."""
    try:
        settings = load_settings(data_dir, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    filemodes.apply(settings)
    return settings


def emit(obj: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    """Print ``obj`` as one JSON object (``--json``) or as human text."""
    if as_json:
        json.dump(obj, sys.stdout, default=str, sort_keys=True)
        sys.stdout.write("\n")
    else:
        click.echo(human(obj) if human else obj)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Plain aligned text table for terminal output; cells and headers pass :func:`terminal_text`
    (they may hold what callers or bundles sent)."""
    if not rows:
        return "(none)"
    cells = [[("" if r.get(c) is None else terminal_text(str(r.get(c)))) for c in columns] for r in rows]
    headers = [terminal_text(c) for c in columns]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(headers, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


# Control (C0, DEL, C1), format (bidi overrides, zero-width), line and paragraph separators, surrogates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def terminal_text(text: str) -> str:
    r"""``text`` with every character a terminal could act on shown as a visible escape
    (``\x1b``, ``\r``, ``\u202e``); printable text, any script, is left as it is."""
    if text.isprintable():
        return text
    return "".join(_escaped(ch) if unicodedata.category(ch) in _UNSAFE_CATEGORIES else ch for ch in text)


def _escaped(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


@contextmanager
def registry(settings: Settings, publish: bool = False) -> Iterator[Store]:
    """The registry store for one command; with ``publish`` (a change), the analytics snapshots
    are republished on the way out."""
    store = open_store(settings)
    try:
        yield store
        if publish:
            admin.publish_snapshots(settings, store)
    finally:
        store.close()


def publish(settings: Settings) -> None:
    """Republish the analytics snapshots after a change outside the store (callers)."""
    with registry(settings, publish=True):
        pass
