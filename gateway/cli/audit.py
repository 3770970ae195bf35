"""``portcullis audit``: verify every host's chain, compact and prune this host's, print the heads,
pin other hosts' audit keys."""
from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timezone

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway import keyfiles
from gateway.audit.compact import compact as compact_trail
from gateway.audit.hosts import check_host
from gateway.audit.manifest import Keys, Report, chains
from gateway.audit.manifest import verify as verify_trail
from gateway.audit.retention import ROLLUPS_DIR
from gateway.audit.retention import prune as prune_trail
from gateway.bundle import parse_public_key, public_key_text
from gateway.cli.common import closed_after, data_option, emit, grace_option, json_option, settings_for
from gateway.cli.help import Group
from gateway.config import Settings
from gateway.keyfiles import audit_key, audit_key_path

TRUSTED = "audit_hosts.json"  # in keys/: host -> its audit public key, pinned by `audit trust`


def _require_key(settings: Settings) -> None:
    if not audit_key_path(settings.keys_dir).exists():  # verifying must never create a key
        raise click.ClickException(f"no audit key in {settings.keys_dir} (run `portcullis init`, "
                                   f"or pass --public-key to verify)")


def _pinned(settings: Settings) -> dict[str, str]:
    path = settings.keys_dir / TRUSTED
    return json.loads(path.read_text()) if path.exists() else {}


def _parse_key(text: str) -> Ed25519PublicKey:
    try:
        return parse_public_key(text, "ed25519")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-key") from None


def _keys(settings: Settings, given: tuple[str, ...]) -> Keys:
    """This host's key (or a bare --public-key) for every chain; pinned and HOST=KEY ones per host."""
    hosts = {host: _parse_key(text) for host, text in _pinned(settings).items()}
    default = None
    for text in given:
        host, _, key = text.partition("=") if "=" in text.split(":", 1)[0] else ("", "", text)
        if host:
            hosts[host] = _parse_key(key)
        else:
            default = _parse_key(key)
    if default is None and audit_key_path(settings.keys_dir).exists():
        default = audit_key(settings.keys_dir).public_key()
    if default is None and not hosts:
        _require_key(settings)
    return Keys(default, hosts)


def _heads(given: tuple[str, ...]) -> list[tuple[str | None, str]]:
    """``--expect-head`` values: ``HOST=SHA256``, or a bare ``SHA256`` of whichever chain holds it."""
    return [(host, head) if sep else (None, host) for host, sep, head in (text.partition("=") for text in given)]


@click.group(cls=Group)
def audit() -> None:
    """The audit trail (audit_directory): verify every host's chain; compact, prune and print heads."""


def _report_text(report: Report) -> str:
    lines = [str(problem) for problem in report.problems]
    for chain in report.chains:
        head = f"head seq {chain.head.seq} sha256 {chain.head.sha256}" if chain.head else "no entries yet"
        lines.append(f"{chain.host}: {chain.files} files, {chain.rows} rows, {chain.entries} manifest entries; {head}")
    summary = (f"{len(report.chains)} chain(s), {report.files} files, {report.rows} rows, "
               f"{report.entries} manifest entries")
    lines.append(f"FAILED: {len(report.problems)} problem(s); {summary}" if report.problems else f"OK: {summary}")
    return "\n".join(lines)


@audit.command()
@click.option("--expect-head", multiple=True, metavar="[HOST=]SHA256",
              help="A head recorded earlier by `audit head`: HOST's chain must contain it (without HOST: "
                   "some chain must). Repeat it for each host.")
@click.option("--public-key", multiple=True, metavar="[HOST=]ed25519:KEY",
              help="Check HOST's chain with this audit key (as `portcullis keys show` prints it); without "
                   "HOST, every chain that has no key pinned, instead of this host's data/keys. Repeatable.")
@data_option
@json_option
def verify(expect_head: tuple[str, ...], public_key: tuple[str, ...], data_dir: str | None, as_json: bool) -> None:
    """Check every host's manifest chain, its signatures and every Parquet file.

    Exits 1 and names each modified, missing, unlisted or reordered file, broken link or bad
    signature, with the host whose chain it concerns.
    """
    settings = settings_for(data_dir)
    report = verify_trail(settings.audit_dir, _keys(settings, public_key), _heads(expect_head))
    result = {"ok": report.ok, "entries": report.entries, "files": report.files, "rows": report.rows,
              "chains": [asdict(chain) for chain in report.chains],
              "problems": [asdict(problem) for problem in report.problems]}
    emit(result, as_json, lambda _: _report_text(report))
    if not report.ok:
        raise SystemExit(1)


@audit.command()
@grace_option
@data_option
@json_option
def compact(grace_s: float | None, data_dir: str | None, as_json: bool) -> None:
    """Merge each closed hour of this host's chain into one Parquet file; the chain records what it replaces.

    Exits 1 if an hour had to be left unmerged (a file that does not match the manifest).
    """
    settings = settings_for(data_dir)
    _require_key(settings)
    if not settings.audit_dir.is_dir():
        raise click.ClickException(f"no audit trail in {settings.audit_dir}")
    grace = closed_after(settings, grace_s)

    def progress(done: int, total: int, partition: str) -> None:
        if partition:
            click.echo(f"[{done + 1}/{total}] merging {partition}", err=True)

    merges = compact_trail(settings.audit_dir, audit_key(settings.keys_dir), now=datetime.now(timezone.utc),
                           grace=grace, host=settings.host_name, progress=progress)
    result = {"merged": [asdict(m) for m in merges if not m.skipped],
              "skipped": [asdict(m) for m in merges if m.skipped]}
    emit(result, as_json, lambda r: "\n".join(
        [f"{m['partition']}: {m['files']} files, {m['rows']} rows -> {m['path']}" for m in r["merged"]]
        + [f"SKIPPED {m['partition']}: {m['skipped']}" for m in r["skipped"]]
        + [f"merged {len(r['merged'])} hour(s)"]))
    if result["skipped"]:
        raise SystemExit(1)


@audit.command()
@click.option("--days", type=click.IntRange(min=1), metavar="N",
              help="Keep this many days (default: the audit_retention_days setting).")
@data_option
@json_option
def prune(days: int | None, data_dir: str | None, as_json: bool) -> None:
    """Remove this host's whole UTC days older than the retention window, recorded in its chain.

    A day goes once it ended at least N days ago, with its rollups; nothing younger is removed.
    """
    settings = settings_for(data_dir)
    _require_key(settings)
    days = days or settings.audit_retention_days
    if not days:
        raise click.UsageError("audit_retention_days is 0 (keep everything): pass --days N to prune anyway")
    if not settings.audit_dir.is_dir():
        raise click.ClickException(f"no audit trail in {settings.audit_dir}")
    pruned = prune_trail(settings.audit_dir, audit_key(settings.keys_dir), host=settings.host_name,
                         now=datetime.now(timezone.utc), retention_days=days,
                         rollups_dir=settings.data_dir / ROLLUPS_DIR)
    result = {"host": settings.host_name, "days": days, "pruned": [asdict(p) for p in pruned]}
    emit(result, as_json, lambda r: "\n".join(
        [f"{p['day']}: {p['files']} files, {p['rows']} rows pruned" for p in r["pruned"]]
        + [f"pruned {len(r['pruned'])} day(s) of host {r['host']}, keeping {days} day(s)"]))


@audit.command()
@data_option
@json_option
def head(data_dir: str | None, as_json: bool) -> None:
    """Print every host's chain head: keep them outside the gateways and pass them to
    `verify --expect-head HOST=SHA256`."""
    heads = []
    for manifest in chains(settings_for(data_dir).audit_dir):
        current = manifest.head()
        heads.append({"host": manifest.host or manifest.path.name, "seq": current.seq if current else 0,
                      "sha256": current.sha256 if current else None, "path": current.path if current else None})
    emit({"heads": heads}, as_json, lambda r: "\n".join(
        f"{h['host']} seq {h['seq']} sha256 {h['sha256']}" for h in r["heads"] if h["sha256"]) or "no entries yet")


@audit.command()
@click.argument("host")
@click.argument("public_key")
@data_option
@json_option
def trust(host: str, public_key: str, data_dir: str | None, as_json: bool) -> None:
    """Pin HOST's audit public key (`ed25519:...`, from `portcullis keys show` on that host):
    `audit verify` then checks HOST's chain with it."""
    settings = settings_for(data_dir)
    try:
        check_host(host)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="HOST") from None
    text = public_key_text(_parse_key(public_key))
    keyfiles.write_private(settings.keys_dir / TRUSTED, json.dumps({**_pinned(settings), host: text},
                                                                   indent=1, sort_keys=True).encode())
    emit({"host": host, "audit": text}, as_json, lambda r: f"pinned the audit key of host {host}")
