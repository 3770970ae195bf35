"""``portcullis backup`` and ``portcullis restore``: the data directory copied while gateways run,
and put back after verifying it (the logic is in :mod:`gateway.backup` and :mod:`gateway.restore`)."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click

from gateway.backup import BackupError, take
from gateway.cli.common import data_option, emit, json_option, settings_for
from gateway.restore import restore as restore_backup
from gateway.restore import verify


def _progress(message: str) -> None:
    click.echo(message, err=True)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None


def _head(head: dict | None) -> str:
    return f"seq {head['seq']} sha256 {head['sha256']}" if head else "no entries yet"


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--with-audit", is_flag=True,
              help="Also copy the audit history (manifest and Parquet files); by default only its head is recorded.")
@data_option
@json_option
def backup(directory: Path, with_audit: bool, data_dir: str | None, as_json: bool) -> None:
    """Copy the registry, keys/ and configuration into DIRECTORY, a new or empty directory,
    while gateways keep serving.

    DIRECTORY holds secrets (it is created 0700): keep it offline. Its backup.json lists every
    file with its SHA-256, the policy_version and the audit chain head, for `portcullis restore`.
    With registry_url set the registry lives in PostgreSQL and is not copied: back it up with pg_dump.
    """
    settings = settings_for(data_dir)
    with _one_line_errors():
        manifest = take(settings, directory, with_audit=with_audit, progress=_progress)
    result = {"directory": str(directory), **{k: manifest[k] for k in (
        "started_at", "finished_at", "policy_version", "audit_head", "with_audit", "registry")},
        "files": len(manifest["files"]), "bytes": sum(f["size"] for f in manifest["files"].values()),
        "sha256": manifest["sha256"]}
    emit(result, as_json, lambda r: (
        f"backup written to {r['directory']}: {r['files']} files, {r['bytes']} bytes, "
        + ("" if r["registry"]["kind"] == "postgresql" else f"{r['registry']['licenses']} licenses, ")
        + f"policy {r['policy_version']}\n"
        + _shared_registry(r["registry"])
        + f"backup.json sha256 {r['sha256']} (keep it elsewhere; `restore --expect-sha256` checks it)\n"
        f"audit head: {_head(r['audit_head'])}"
        + ("" if r["with_audit"] else " (history not copied: copy audit/ with rsync, or use --with-audit)")))


def _shared_registry(registry: dict) -> str:
    """What a backup of a data directory on the PostgreSQL registry does not hold, said plainly."""
    if registry["kind"] != "postgresql":
        return ""
    return (f"registry NOT in this backup: it lives in PostgreSQL ({registry['location']}, {registry['licenses']} "
            f"licenses, revision {registry['revision']}); back it up with pg_dump (docs/operations.md, Backups)\n")


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--overwrite", is_flag=True,
              help="Restore into a data directory that is not empty (what it held is moved to pre-restore-<time>/).")
@click.option("--check", is_flag=True, help="Only verify the backup's checksums; restore nothing.")
@click.option("--expect-sha256", "expect", metavar="SHA256",
              help="The backup.json SHA-256 that `backup` printed: refuse a backup rewritten since.")
@data_option
@json_option
def restore(directory: Path, overwrite: bool, check: bool, expect: str | None, data_dir: str | None,
            as_json: bool) -> None:
    """Verify the backup in DIRECTORY and restore it into the data directory.

    Exits 1, restoring nothing, if any file differs from the backup's backup.json, or if the data
    directory is not empty (without --overwrite) or a gateway is running on it.
    """
    with _one_line_errors():
        if check:
            manifest = verify(directory, expect)
            emit({"ok": True, "files": len(manifest["files"]), "started_at": manifest["started_at"],
                  "audit_head": manifest["audit_head"]}, as_json,
                 lambda r: f"OK: {r['files']} files match backup.json (backup of {r['started_at']})")
            return
        result = restore_backup(directory, settings_for(data_dir).data_dir, overwrite=overwrite, expect=expect,
                                progress=_progress)
    emit(result, as_json, lambda r: "\n".join([
        f"restored {r['files']} files ({r['bytes']} bytes) into {r['data_dir']}: "
        f"{'the registry' if r['registry']['restored'] else 'keys and configuration'} as of "
        f"{r['backup_started_at']}, policy {r['policy_version']}, audit head {_head(r['audit_head'])}",
        *([f"previous contents ({', '.join(r['moved'])}) moved to {r['moved_aside']}"] if r["moved_aside"] else []),
        *(["seats, quotas and revocations are as of the backup: redo revocations made since",
           f"replay protection: do not serve before {r['serve_after']} unless the old gateway stopped "
           f"taking requests at least clock_skew_s earlier"] if r["registry"]["restored"] else
          [f"registry not restored: it lives in PostgreSQL ({r['registry']['location']}) and is used as it is; "
           f"to take it back too, restore its pg_dump"]),
    ]))
