"""Huge, deep and malformed request documents.

A request is at most 1 MiB (EFBIG past that, the upload failing as a whole
at the write that crosses the limit), names at most 10,000 files, and must
be exactly the documented object (EINVAL otherwise; docs/promote.md).  The
parser bounds nesting, so no document can exhaust the daemon's stack; none
may take the daemon's memory past a bound or keep it busy for long.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import (ALICE, ALICE_RUN, REFUSALS, StoreGuard, check_status_safe, errno_of,
                      outcome, read_bytes, request, rss_limit_kb, vmrss_kb)

MIB = 1 << 20
RUN = ALICE_RUN.encode()


def deep(n: int, opener: bytes, closer: bytes) -> bytes:
    return opener * n + closer * n


DOCS = [
    # (id, document, expected)
    ("2MiB", b'{"run_id": "' + RUN + b'", "files": ["ok.txt"], "agent_id": "'
     + b"a" * (2 * MIB) + b'"}', "EFBIG"),
    ("1MiB-plus-1", (b'{"run_id": "' + RUN + b'", "files": ["ok.txt"]}').ljust(MIB + 1), "EFBIG"),
    ("1MiB-exactly", (b'{"run_id": "' + RUN + b'", "files": ["ok.txt"]}').ljust(MIB), "ok"),
    ("nested-arrays-500k", deep(500_000, b"[", b"]"), "EINVAL"),
    ("nested-objects-100k", deep(100_000, b'{"a":', b"}")[:-1] + b"1}", "EINVAL"),
    ("nested-in-files", b'{"run_id": "' + RUN + b'", "files": ' + deep(200_000, b"[", b"]")
     + b"}", "EINVAL"),
    ("nested-in-run-id", b'{"run_id": ' + deep(3000, b"[", b"]") + b', "files": ["a"]}',
     "EINVAL"),
    ("10001-files", json.dumps({"run_id": ALICE_RUN,
                                "files": [f"f{i}" for i in range(10_001)]}).encode(), "EINVAL"),
    ("10000-missing-files", json.dumps({"run_id": ALICE_RUN,
                                        "files": [f"f{i}" for i in range(10_000)]}).encode(),
     "ENOENT"),
    ("unknown-keys-1MiB", json.dumps({"run_id": ALICE_RUN, "files": ["ok.txt"],
                                      **{f"k{i}": i for i in range(70_000)}}).encode()[:MIB - 2]
     + b"}", "EINVAL"),
    ("duplicate-run-id", b'{"run_id": "' + RUN + b'", "run_id": "other", "files": ["ok.txt"]}',
     "EINVAL"),
    ("files-and-filename", b'{"run_id": "' + RUN + b'", "files": ["ok.txt"], '
     b'"filename": "ok.txt"}', "EINVAL"),
    ("run-id-number", b'{"run_id": 12, "files": ["ok.txt"]}', "EINVAL"),
    ("files-not-strings", b'{"run_id": "' + RUN + b'", "files": [1, null, {}]}', "EINVAL"),
    ("empty-files", b'{"run_id": "' + RUN + b'", "files": []}', "EINVAL"),
    ("nan", b'{"run_id": "' + RUN + b'", "files": ["ok.txt"], "agent_id": NaN}', "EINVAL"),
    ("bom", b'\xef\xbb\xbf{"run_id": "' + RUN + b'", "files": ["ok.txt"]}', "EINVAL"),
    ("trailing-garbage", b'{"run_id": "' + RUN + b'", "files": ["ok.txt"]} {"run_id": "x"}',
     "EINVAL"),
    ("not-an-object", b'["' + RUN + b'", "ok.txt"]', "EINVAL"),
    # Nothing written: committed at the last close, where no caller can
    # see the result (docs/promote.md), so close() says 0; .status EINVAL.
    ("empty", b"", "EINVAL"),
    ("nul-bytes", b"\0" * 4096, "EINVAL"),
]


@pytest.mark.parametrize("doc,expected", [(d, e) for _, d, e in DOCS], ids=[i for i, _, _ in DOCS])
def test_hostile_request_document(world, mounter, doc, expected):
    """The request fails with the documented errno within seconds (or, for
    the exactly-1-MiB one, succeeds), the daemon's memory stays bounded,
    the daemon still answers, and nothing but a legitimate landing changes
    the store."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    start = time.monotonic()
    steps = request(m.mnt, doc)
    elapsed = time.monotonic() - start
    assert outcome(steps) == (expected if doc else "ok"), steps
    assert elapsed < 10, f"the request took {elapsed:.1f} s"
    assert vmrss_kb(m.proc.pid) < rss_limit_kb(), f"VmRSS {vmrss_kb(m.proc.pid)} kB"
    entries = check_status_safe(m.mnt)
    assert entries[-1]["result"] == ("ok" if expected == "ok" else expected)
    assert not [n for n in os.listdir(m.mnt / "promote") if n.endswith(".json")]
    rel = f"artifacts/{ALICE}/{ALICE_RUN}"
    guard.check(allow=[f"{rel}/ok.txt", f"{rel}/metadata.json"] if expected == "ok" else [])


def test_a_request_settled_at_release_is_gone_once_status_tells(world, mounter):
    """An empty request is settled at the release the kernel sends after
    close() returned (nothing to commit at the close).  As soon as .status
    shows its outcome, promote/ no longer lists it: 40 times, each read the
    moment the outcome appears."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    status = m.mnt / "promote" / ".status"
    for i in range(40):
        before = len(read_bytes(status).splitlines())
        fd = os.open(m.mnt / "promote" / f"req-{i}.json", os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
        deadline = time.monotonic() + 10
        while len(read_bytes(status).splitlines()) == before:
            assert time.monotonic() < deadline, "no outcome in .status"
        listed = [n for n in os.listdir(m.mnt / "promote") if n.endswith(".json")]
        assert not listed, (i, listed)
    assert [e["result"] for e in check_status_safe(m.mnt)[-40:]] == ["EINVAL"] * 40


@pytest.mark.parametrize("how", ["ftruncate-1TiB", "pwrite-at-2MiB", "sparse-seek-1TiB"])
def test_request_size_by_truncate_or_offset(world, mounter, how):
    """A request made large without writing its bytes (ftruncate to 1 TiB,
    a write at an offset past 1 MiB, a write 1 TiB in) fails with EFBIG at
    once, and its staged file never grows."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    path = m.mnt / "promote" / "big.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b'{"run_id": "' + RUN + b'", "files": ["ok.txt"]}')
        if how == "ftruncate-1TiB":
            result = errno_of(os.ftruncate, fd, 1 << 40)
        elif how == "pwrite-at-2MiB":
            result = errno_of(os.pwrite, fd, b" ", 2 * MIB)
        else:
            result = errno_of(os.pwrite, fd, b" ", 1 << 40)
        assert result == "EFBIG", result
    finally:
        close_result = errno_of(os.close, fd)
    assert close_result == "EFBIG", close_result
    assert "big.json" not in os.listdir(m.mnt / "promote")
    staging = world.root / ".artifactfs" / "staging" / ALICE
    big = [p for p in staging.rglob("*") if p.is_file() and p.stat().st_size > MIB]
    assert not big, big
    guard.check()
