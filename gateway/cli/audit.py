"""``portcullis audit``: verify the audit trail, compact closed hours, print the chain head."""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.audit.compact import compact as compact_trail
from gateway.audit.manifest import Manifest, Report
from gateway.audit.manifest import verify as verify_trail
from gateway.bundle import parse_public_key
from gateway.cli.common import closed_after, data_option, emit, grace_option, json_option, settings_for
from gateway.cli.help import Group
from gateway.config import Settings
from gateway.keyfiles import audit_key, audit_key_path


def _require_key(settings: Settings) -> None:
    if not audit_key_path(settings.keys_dir).exists():  # verifying must never create a key
        raise click.ClickException(f"no audit key in {settings.keys_dir} (run `portcullis init`, "
                                   f"or pass --public-key to verify)")


def _public_key(settings: Settings, text: str | None) -> Ed25519PublicKey:
    if text:
        try:
            return parse_public_key(text, "ed25519")
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--public-key") from None
    _require_key(settings)
    return audit_key(settings.keys_dir).public_key()


@click.group(cls=Group)
def audit() -> None:
    """The audit trail under data/audit: verify it, compact it, print its head."""


def _report_text(report: Report) -> str:
    lines = [str(problem) for problem in report.problems]
    head = f"head seq {report.head.seq} sha256 {report.head.sha256}" if report.head else "no entries yet"
    summary = f"{report.files} files, {report.rows} rows, {report.entries} manifest entries; {head}"
    lines.append(f"FAILED: {len(report.problems)} problem(s); {summary}" if report.problems else f"OK: {summary}")
    return "\n".join(lines)


@audit.command()
@click.option("--expect-head", metavar="SHA256", help="A head recorded earlier by `audit head`: the chain must contain it.")
@click.option("--public-key", metavar="ed25519:KEY",
              help="Check signatures with this audit key (as `portcullis keys show` prints it) instead of data/keys.")
@data_option
@json_option
def verify(expect_head: str | None, public_key: str | None, data_dir: str | None, as_json: bool) -> None:
    """Check the manifest chain, its signatures and every Parquet file.

    Exits 1 and names each modified, missing, unlisted or reordered file, broken link or bad
    signature.
    """
    settings = settings_for(data_dir)
    report = verify_trail(settings.audit_dir, _public_key(settings, public_key), expect_head)
    result = {"ok": report.ok, "entries": report.entries, "files": report.files, "rows": report.rows,
              "head": asdict(report.head) if report.head else None,
              "problems": [asdict(problem) for problem in report.problems]}
    emit(result, as_json, lambda _: _report_text(report))
    if not report.ok:
        raise SystemExit(1)


@audit.command()
@grace_option
@data_option
@json_option
def compact(grace_s: float | None, data_dir: str | None, as_json: bool) -> None:
    """Merge each closed hour's Parquet files into one; the manifest records what it replaces.

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
                           grace=grace, progress=progress)
    result = {"merged": [asdict(m) for m in merges if not m.skipped],
              "skipped": [asdict(m) for m in merges if m.skipped]}
    emit(result, as_json, lambda r: "\n".join(
        [f"{m['partition']}: {m['files']} files, {m['rows']} rows -> {m['path']}" for m in r["merged"]]
        + [f"SKIPPED {m['partition']}: {m['skipped']}" for m in r["skipped"]]
        + [f"merged {len(r['merged'])} hour(s)"]))
    if result["skipped"]:
        raise SystemExit(1)


@audit.command()
@data_option
@json_option
def head(data_dir: str | None, as_json: bool) -> None:
    """Print the chain head: keep it outside the gateway and pass it to `verify --expect-head`."""
    current = Manifest(settings_for(data_dir).audit_dir).head()
    result = asdict(current) if current else {"seq": 0, "sha256": None, "path": None}
    emit(result, as_json, lambda r: f"seq {r['seq']} sha256 {r['sha256']}" if r["sha256"] else "no entries yet")
