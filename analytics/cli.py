"""``portcullis report``, ``portcullis sql`` and ``portcullis rollup``: thin commands over
``analytics.registry``, ``analytics.db`` and ``analytics.rollups``. Every failure is one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Iterator, TextIO

import click
import duckdb
import pyarrow as pa

from analytics.db import CorruptFileError, connect, query, skipped_files
from analytics.output import FORMATS, render
from analytics.registry import REPORTS, ReportError, get_report, run_report
from analytics.rollups import build as build_rollups
from gateway.cli.common import closed_after, data_option, emit, grace_option, json_option, settings_for

format_option = click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                             help="Output format.")
skip_corrupt_option = click.option("--skip-corrupt", is_flag=True,
                                   help="Leave unreadable audit files out (named on stderr) instead of failing.")


@contextmanager
def _connection(data_dir: str | None, skip_corrupt: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    root = settings_for(data_dir).data_dir
    if not root.is_dir():  # a mistyped --data would otherwise look like an empty history
        raise click.ClickException(f"data directory {root} does not exist")
    con = connect(root, skip_corrupt=skip_corrupt)
    try:
        yield con
        for path in skipped_files(con):
            click.echo(f"warning: skipped unreadable audit file {path}", err=True)
    finally:
        con.close()


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@click.command()
@click.argument("name", required=False)
@click.option("--days", type=int, help="Window in days (reports that take it).")
@click.option("--hours", type=int, help="Window in hours (reports that take it).")
@click.option("--bucket", type=click.Choice(["hour", "day"]), help="Time bucket (trends, latency).")
@click.option("--now", "now_text", metavar="ISO", help="Report as of this time (default: now; naive = UTC).")
@click.option("-p", "--param", "extra", multiple=True, metavar="NAME=VALUE", help="Any other report parameter.")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Only this gateway host's records (repeatable; default: every host's).")
@format_option
@skip_corrupt_option
@data_option
def report(name: str | None, days: int | None, hours: int | None, bucket: str | None, now_text: str | None,
           extra: tuple[str, ...], hosts: tuple[str, ...], fmt: str, skip_corrupt: bool, data_dir: str | None) -> None:
    """Run the report NAME over the audit history of every gateway host; without NAME, list the reports."""
    if name is None:
        click.echo(_catalogue(fmt))
        return
    try:
        spec = get_report(name)
        texts = dict(item.partition("=")[::2] for item in extra)
        if now_text is not None:
            texts["now"] = now_text
        given = {"days": days, "hours": hours, "bucket": bucket}
        params = {**spec.parse(texts), **{key: value for key, value in given.items() if value is not None}}
        bound = spec.bind(**params)  # once, so the output states the exact `now` used
        if spec.reads_rollups:
            _bring_rollups_up_to_date(settings_for(data_dir))
        with _connection(data_dir, skip_corrupt) as con:
            click.echo(render(run_report(con, name, hosts, **bound), fmt, report=name, params=bound))
    except ReportError as exc:
        raise click.UsageError(str(exc)) from None
    except CorruptFileError as exc:
        raise click.ClickException(f"{exc}; --skip-corrupt leaves unreadable audit files out") from None
    except duckdb.Error as exc:
        raise click.ClickException(_one_line(exc)) from None


def _bring_rollups_up_to_date(settings) -> None:
    """Summarise the hours closed since the last build, as `portcullis rollup` does (quick unless
    much is new; progress on stderr). Where that cannot be done (another build running, a
    read-only data directory) the report reads more of the raw trail: slower, same answer."""
    if not settings.audit_dir.is_dir():
        return
    try:
        build_rollups(settings.data_dir, now=datetime.now(timezone.utc), grace=settings.hour_closed_after,
                      wait=False, progress=_summarising)
    except (OSError, duckdb.Error, CorruptFileError) as exc:
        click.echo(f"warning: rollups not brought up to date ({_one_line(exc)}); reading the raw trail", err=True)


def _summarising(done: int, total: int, day: str) -> None:
    if day:
        click.echo(f"[{done + 1}/{total}] summarising {day}", err=True)


def _catalogue(fmt: str) -> str:
    rows = [{"name": r.name, "title": r.title,
             "params": " ".join(f"{p.name}={p.default}" for p in r.params if p.name != "now"),
             "description": r.description} for r in REPORTS.values()]
    if fmt == "table":
        width = max(len(r["name"]) for r in rows)
        return "\n".join(f"{r['name']:<{width}}  {r['title']}  ({r['params']})" for r in rows)
    return render(pa.Table.from_pylist(rows), fmt)


@click.command()
@click.option("-c", "--command", "sql_text", metavar="SQL", help="Run these statements and exit.")
@format_option
@skip_corrupt_option
@data_option
def sql(sql_text: str | None, fmt: str, skip_corrupt: bool, data_dir: str | None) -> None:
    """Run SQL over the views audit, licenses and callers.

    With -c, run the given statements; otherwise read statements from stdin, each ended by `;`
    (interactive when stdin is a terminal; `.quit` or end of input leaves).
    """
    try:
        with _connection(data_dir, skip_corrupt) as con:
            if sql_text is not None:
                _execute(con, sql_text, fmt)
            elif not _repl(con, click.get_text_stream("stdin"), fmt):
                sys.exit(1)
    except CorruptFileError as exc:
        raise click.ClickException(f"{exc}; --skip-corrupt leaves unreadable audit files out") from None
    except duckdb.Error as exc:
        raise click.ClickException(_one_line(exc)) from None


def _execute(con: duckdb.DuckDBPyConnection, text: str, fmt: str) -> None:
    for statement in duckdb.extract_statements(text):
        result = query(con, statement.query)
        if result.num_columns:
            click.echo(render(result, fmt))


def _repl(con: duckdb.DuckDBPyConnection, stdin: TextIO, fmt: str) -> bool:
    """Read-execute-print until end of input; True when every statement succeeded."""
    interactive = stdin.isatty()
    ok = True
    buffer: list[str] = []
    while True:
        if interactive:
            click.echo("portcullis> " if not buffer else "        ...> ", nl=False, err=True)
        line = stdin.readline()
        if not line or (not buffer and line.strip() in (".quit", ".exit", "\\q")):
            break
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        ok = _run_buffered(con, "".join(buffer), fmt) and ok
        buffer.clear()
    if "".join(buffer).strip():
        ok = _run_buffered(con, "".join(buffer), fmt) and ok
    return ok


def _run_buffered(con: duckdb.DuckDBPyConnection, text: str, fmt: str) -> bool:
    try:
        _execute(con, text, fmt)
    except (duckdb.Error, CorruptFileError) as exc:
        click.echo(f"error: {_one_line(exc)}", err=True)
        return False
    return True


@click.command()
@grace_option
@data_option
@json_option
def rollup(grace_s: float | None, data_dir: str | None, as_json: bool) -> None:
    """Summarise the audit trail's closed hours into rollups/, which the Overview's reports
    (overview, trends, latency) read instead of every record.

    Summarises hours closed since the last run, and again any hour whose files changed. Run it
    from cron, or keep `portcullis dashboard` running: it does the same every minute.
    """
    settings = settings_for(data_dir)
    if not settings.audit_dir.is_dir():
        raise click.ClickException(f"no audit trail in {settings.audit_dir}")
    grace = closed_after(settings, grace_s)

    try:
        result = build_rollups(settings.data_dir, now=datetime.now(timezone.utc), grace=grace, progress=_summarising)
    except (OSError, duckdb.Error, CorruptFileError) as exc:
        raise click.ClickException(_one_line(exc)) from None
    for path in result.skipped_files:
        click.echo(f"warning: unreadable audit file {path}: its hour is left to the raw trail", err=True)
    emit(asdict(result), as_json, lambda r: (
        f"summarised {r['hours_built']} hour(s), dropped {r['hours_dropped']}, "
        f"{len(r['days_written'])} day file(s) written in {r['seconds']} s"))
