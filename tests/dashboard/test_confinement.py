"""The dashboard's DuckDB connections read the audit, rollup and snapshot folders and nothing
else: not ``keys/``, not the registry database, no other file, whatever SQL is sent, over the
connections themselves and through the SQL box of the running app."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import duckdb
import pytest
import streamlit as st
from click.testing import CliRunner

from dashboard import data
from gateway.cli import main
from tests.dashboard.test_app import count, open_app, run_sql


@pytest.fixture(scope="module")
def root(history, tmp_path_factory) -> Path:
    """A data directory as `portcullis init` and `caller add` leave it (keys, registry, snapshots),
    with the synthetic audit trail, and traps: links from audit/ to keys/ and a sibling folder
    whose name starts like audit/'s."""
    root = tmp_path_factory.mktemp("confined") / "data"
    for args in (["init"], ["caller", "add", "billing"]):
        result = CliRunner().invoke(main, [*args, "--data", str(root)])
        assert result.exit_code == 0, result.output
    shutil.copytree(history / "audit", root / "audit", dirs_exist_ok=True)
    (root / "audit" / "keys").symlink_to(root / "keys", target_is_directory=True)
    (root / "audit" / "secrets.json").symlink_to(root / "keys" / "hmac_secrets.json")
    shutil.copytree(root / "keys", root / "audit-old")
    yield root
    st.cache_resource.clear()


def secrets(root: Path) -> list[str]:
    """What must never come out: every caller's HMAC secret and the private keys' text."""
    texts = [p.read_text() for p in (root / "keys").iterdir()]
    assert "ps_" in texts[[p.name for p in (root / "keys").iterdir()].index("hmac_secrets.json")]
    return [line for text in texts for line in text.splitlines() if len(line) > 20]


def attacks(root: Path) -> list[str]:
    keys = root / "keys"
    return [
        f"SELECT * FROM read_text('{keys}/*')",
        f"SELECT * FROM read_text('{keys}/hmac_secrets.json')",
        f"SELECT * FROM read_blob('{root}/portcullis.db')",
        f"SELECT * FROM read_text('{root}/audit/../keys/hmac_secrets.json')",
        f"SELECT * FROM read_text('{root}/audit/keys/hmac_secrets.json')",  # a directory link
        f"SELECT * FROM read_text('{root}/audit/secrets.json')",  # a file link
        f"SELECT * FROM read_text('{root}/audit/*.json')",
        f"SELECT * FROM read_text('{root}/audit-old/hmac_secrets.json')",  # prefix of the folder name
        "SELECT * FROM read_text('keys/hmac_secrets.json')",  # relative to the data directory
        f"SELECT * FROM glob('{root}/*')",
        "SELECT * FROM read_text('/etc/passwd')",
        f"SELECT * FROM read_csv('{root}/callers.toml')",
    ]


STATEMENTS = [
    "ATTACH '{root}/portcullis.db' AS registry",
    "ATTACH '{root}/keys/stolen.duckdb' AS stolen",
    "COPY (SELECT 1) TO '{root}/keys/planted.csv'",
    "COPY (SELECT 1) TO '/tmp/portcullis-planted.csv'",
    "INSTALL sqlite",
    "LOAD sqlite",
    "SET allowed_directories = ['/']",
    "RESET allowed_directories",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
]


@pytest.mark.parametrize("which", [{}, {"sql_box": True}], ids=["reports", "sql-box"])
def test_the_connections_reach_nothing_but_the_views_folders(root, which):
    con = data._database(str(root), **which).con
    for sql in attacks(root):
        with pytest.raises(duckdb.PermissionException):
            con.sql(sql).fetchall()
    for sql in STATEMENTS:
        with pytest.raises((duckdb.PermissionException, duckdb.InvalidInputException)):  # the latter: locked
            con.execute(sql.format(root=root))
    assert not (root / "keys" / "planted.csv").exists() and not (root / "keys" / "stolen.duckdb").exists()
    assert not os.path.exists("/tmp/portcullis-planted.csv")
    # The settings stand, and the views still answer.
    assert con.sql("SELECT current_setting('enable_external_access')").fetchall() == [(False,)]
    assert con.sql("SELECT count(*) FROM audit").fetchall() == [(count(root),)]
    assert con.sql("SELECT caller_id FROM callers").fetchall() == [("billing",)]
    assert con.sql("SELECT count(*) FROM licenses").fetchall() == [(0,)]
    assert con.sql("SELECT count(*) FROM rollups").fetchall() == [(0,)]


def test_the_sql_box_shows_no_secret_whatever_is_typed(root, monkeypatch):
    at = open_app(root, monkeypatch, "explorer")
    hidden = secrets(root)
    for sql in [*attacks(root), *(s.format(root=root) for s in STATEMENTS)]:
        run_sql(at, sql)
        shown = " ".join(str(e.value) for e in at.error)
        assert shown.startswith(("Query failed", "Refused")), (sql, shown)
        assert not any(secret in shown for secret in hidden)
    run_sql(at, "SELECT caller_id FROM callers")
    assert not at.error and at.dataframe[-1].value["caller_id"].tolist() == ["billing"]
