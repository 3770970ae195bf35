"""``portcullis policy``: validate a proposed policy, and replay the history through it before it
goes live (``analytics.impact`` does the work; this is the terminal's view of it)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pyarrow as pa

from gateway.cli.common import data_option, emit, json_option, settings_for
from gateway.cli.help import Group
from gateway.policy import load_policy

DEFAULT_DAYS = 30
REPLAY_WORKERS = 2  # the two policies replay side by side


@click.group(cls=Group)
def policy() -> None:
    """Check a proposed policy file, or see whom it would affect."""


@policy.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def check(path: Path, as_json: bool) -> None:
    """Validate PATH as a policy (nothing is replayed or loaded); a broken one names the file,
    tier and field, and exits 1."""
    proposed = load_policy(path)
    emit({"path": str(path), "policy_version": proposed.version, "tiers": sorted(proposed.tiers)}, as_json,
         lambda r: f"{r['path']}: valid, policy_version {r['policy_version']}, tiers: {', '.join(r['tiers'])}")


@policy.command("impact")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--days", type=int, default=DEFAULT_DAYS, show_default=True, help="Replay the last N days.")
@click.option("--now", "now_text", metavar="ISO", help="Replay up to this time (default: now; naive = UTC).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table: summary and changes; csv: changed decisions by customer; json: the whole report.")
@data_option
def impact(path: Path, days: int, now_text: str | None, fmt: str, data_dir: str | None) -> None:
    """Replay the recorded checks of the last N days under the current policy and under PATH, and
    list every decision that would change (by customer, tier and feature, with examples). The
    registry and the trail are only read."""
    from analytics import impact as impact_
    from analytics.db import connect
    from analytics.output import render
    from gateway.licenses import parse_time

    settings = settings_for(data_dir)
    proposed = load_policy(path)  # a broken proposal is refused before anything is read
    current = load_policy(settings.policy_path)
    try:
        now = parse_time(now_text, "--now")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--now") from None
    con = connect(settings.data_dir)
    try:
        result = impact_.impact(con, impact_.registry_licenses(settings.db_path, settings.registry_url), current, proposed, days=days,
                                now=now, proposed_source=str(path), workers=REPLAY_WORKERS)
    except impact_.ImpactError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        con.close()
    if fmt == "json":
        emit(result, True)
    elif fmt == "csv":
        click.echo(render(_table(result["by_customer"], ["customer", "before", "after", "records"]), "csv"))
    else:
        click.echo(text_report(result, lambda rows, columns: render(_table(rows, columns), "table")))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
    return pa.table({c: [r[c] for r in rows] for c in columns}) if rows else pa.table({c: [] for c in columns})


def text_report(r: dict[str, Any], table) -> str:
    """The report for a terminal: what was replayed and from where, the self-check, the changes."""
    check = r["self_check"]
    lines = [f"Replayed {r['replayed']:,} recorded checks from {r['since']} to {r['until']}",
             f"current policy {r['current_policy']} -> proposed {r['proposed_policy']} ({r['proposed_source']})",
             f"licenses: as the trail records them (tier, expiry, status), else from the {r['licenses_source']}",
             f"self-check: the replay under the current policy reproduces {check['reproduced']:,} of "
             f"{check['replayed']:,} recorded decisions"]
    lines += [f"  {d['records']:,} differ: {d['cause']}" for d in check["differ"]]
    lines += ["", f"{r['changed']:,} decisions would change", ""]
    for title, rows, columns in (
            ("Changes", r["transitions"], ["before", "after", "records"]),
            ("By customer", r["by_customer"], ["customer", "before", "after", "records"]),
            ("By tier", r["by_tier"], ["tier", "records"]),
            ("By feature", r["by_feature"], ["feature", "records"]),
            ("Examples", r["examples"], ["ts", "customer", "tier", "feature", "user_id", "before", "after"])):
        if rows:
            lines += [title, table(rows, columns), ""]
    return "\n".join(lines).rstrip()
