"""A callers.toml of any broken shape is one CallersError, never another exception: a running
gateway then keeps the callers in force (tests/e2e/test_caller_changes.py)."""
from __future__ import annotations

import pytest

from gateway.callers import CallerFiles, CallersError


@pytest.mark.parametrize("text", [b"[callers.x\n", b"\xff\xfe", b"callers = 3", b"[callers]\nx = 1",
                                  b"callers = [1]", b"[callers.x]\nkey_ids = 'pk_1'", b"[callers.x]\nhue = 1"])
def test_a_broken_callers_file_is_one_callers_error(tmp_path, text):
    path = tmp_path / "callers.toml"
    path.write_bytes(text)
    with pytest.raises(CallersError, match="callers.toml"):
        CallerFiles(path, tmp_path / "keys").load()


def test_an_unreadable_file_is_one_callers_error_and_one_version(tmp_path):
    path = tmp_path / "callers.toml"
    path.mkdir()  # cannot be read as a file (mode 000 would not stop root)
    files = CallerFiles(path, tmp_path / "keys")
    assert files.version() == files.version()
    with pytest.raises(CallersError, match="cannot be read"):
        files.load()


def test_the_version_moves_with_either_file_and_only_then(tmp_path):
    path, keys = tmp_path / "callers.toml", tmp_path / "keys"
    files = CallerFiles(path, keys)
    versions = [files.version()]
    path.write_text("[callers.a]\n")
    versions.append(files.version())
    keys.mkdir()
    (keys / "hmac_secrets.json").write_text("{}")
    versions.append(files.version())
    path.write_text("[callers.b]\n")  # same length, same second: still a new version
    versions.append(files.version())
    assert len(set(versions)) == 4 and files.version() == versions[-1]
