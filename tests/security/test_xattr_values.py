"""Hostile attribute values: what an agent may put into metadata.json.

user.artifact.agent_id (on an upload in flight) and user.artifact.
workflow_id / user_directive (on promote/<new run>) become metadata.json
strings that the kernel-server parses with serde.  Accepted: UTF-8 text
without control characters, at most 4096 bytes (docs/promote.md); anything
else is refused (E2BIG past 4096 bytes -- or the kernel's own 64 KiB xattr
limit --, EINVAL otherwise) and the default stays.  Whatever is accepted is
written so that metadata.json stays valid JSON, in serde's exact form, and
passes the kernel-server schema (strict_metadata), with the value intact.
Request fields take the same rule (test_traversal.py covers refusals).
"""

from __future__ import annotations

import os

import pytest

from conftest import (ALICE, REFUSALS, SESSION_OK, StoreGuard, errno_of, outcome, read_bytes,
                      request, strict_metadata)

VALUES = [
    # (id, value, expected errno or "ok")
    ("1MiB", b"a" * (1 << 20), "E2BIG"),
    ("64KiB", b"a" * 65536, "E2BIG"),
    ("4097-bytes", b"a" * 4097, "E2BIG"),
    ("4096-bytes", "é".encode() * 2048, "ok"),
    ("invalid-utf8", b"agent\xff\xfe", "EINVAL"),
    ("overlong-utf8", b"a\xc0\xafb", "EINVAL"),
    ("utf8-surrogate", b"a\xed\xa0\x80", "EINVAL"),
    ("truncated-utf8", b"a\xe2\x82", "EINVAL"),
    ("nul-inside", b"a\x00b", "EINVAL"),
    ("newline", b'a",\n  "status": "hacked', "EINVAL"),
    ("carriage-return", b"a\rb", "EINVAL"),
    ("tab", b"a\tb", "EINVAL"),
    ("escape-sequence", b"\x1b[2J", "EINVAL"),
    ("del", b"a\x7fb", "EINVAL"),
    ("c1-control", "a\u0085b".encode(), "EINVAL"),
    ("json-breaking-quotes", b'", "run_id": "bob", "x": "', "ok"),
    ("backslashes", b'\\", \\u0000 \\\\ \\n', "ok"),
    ("json-object", b'{"agent_id": "admin"}], "status": "gone"}', "ok"),
    ("line-separators", "a\u2028b\u2029c".encode(), "ok"),
    ("bom-and-nonchar", "\ufeffx\uffff".encode(), "ok"),
    ("emoji", "🦀 agent 🦀".encode(), "ok"),
    ("empty", b"", "ok"),
]

ATTRS = ["agent_id", "workflow_id", "user_directive"]


def set_and_promote(m, attr: str, value: bytes, run: str) -> tuple[str, dict]:
    """Sets attr to value the documented way and promotes x.txt into run
    (a new run, so the run attributes apply); returns the setxattr result
    and the upload's steps."""
    if attr == "agent_id":
        os.mkdir(m.mnt / "promote" / run)
        path = m.mnt / "promote" / run / "x.txt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"payload")
            result = errno_of(os.setxattr, path, f"user.artifact.{attr}", value)
        finally:
            os.close(fd)
        return result
    os.mkdir(m.mnt / "promote" / run)
    result = errno_of(os.setxattr, m.mnt / "promote" / run, f"user.artifact.{attr}", value)
    fd = os.open(m.mnt / "promote" / run / "x.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, b"payload")
    finally:
        os.close(fd)
    return result


@pytest.mark.parametrize("attr", ATTRS)
@pytest.mark.parametrize("value,expected", [(v, e) for _, v, e in VALUES],
                         ids=[i for i, _, _ in VALUES])
def test_hostile_attribute_value(world, mounter, attr, value, expected):
    """The value is refused with the documented errno or stored intact;
    metadata.json stays schema-valid either way, and nothing but the new
    run changes in the store."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    run = "xattr-run"
    result = set_and_promote(m, attr, value, run)
    assert result == expected, result
    run_dir = world.root / "artifacts" / ALICE / run
    meta = strict_metadata(read_bytes(run_dir / "metadata.json"), run)
    entry = {a["filename"]: a for a in meta["artifacts"]}["x.txt"]
    stored = entry["agent_id"] if attr == "agent_id" else meta[attr]
    default = "artifactfs" if attr == "agent_id" else ""
    if expected == "ok":
        assert stored.encode("utf-8") == value
        target = m.mnt / run / "x.txt" if attr == "agent_id" else m.mnt / run
        if value:
            assert os.getxattr(target, f"user.artifact.{attr}") == value
    else:
        assert stored == default
    guard.check(allow=[f"artifacts/{ALICE}/{run}"])


@pytest.mark.parametrize("value", [v.decode() for i, v, e in VALUES if e == "ok" and v],
                         ids=[i for i, v, e in VALUES if e == "ok" and v])
def test_hostile_request_field_value(world, mounter, value):
    """The same accepted values through a request's agent_id, workflow_id
    and user_directive: stored intact, metadata.json schema-valid."""
    m = mounter(world, ALICE)
    guard = StoreGuard(world)
    run = "request-run"
    world.add_session_output(run, {"ok.txt": SESSION_OK})
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": run, "files": ["ok.txt"], "agent_id": value,
                            "workflow_id": value, "user_directive": value})
    assert outcome(steps) == "ok", steps
    meta = strict_metadata(read_bytes(world.root / "artifacts" / ALICE / run / "metadata.json"),
                           run)
    assert meta["workflow_id"] == meta["user_directive"] == value
    assert meta["artifacts"][0]["agent_id"] == value
    guard.check(allow=[f"artifacts/{ALICE}/{run}"])
