"""promote/: direct uploads and requests, as a user does them with ordinary
tools, and what they leave in the store.

A direct upload is a file written at promote/<run>/<name>; its close()
commits it to STORE/artifacts/<client>/<run>/<name> and metadata.json.  A
request is a JSON document written directly in promote/; its close() copies
the session files it names.  Every refusal is checked from the shell (the
message a user sees) and leaves the store as it was (store_state: the whole
STORE tree but the daemon's private STORE/.artifactfs).

Mounts that are refused something expect a log line naming the run, file
or request (expect_warnings/expect_errors); every other daemon line at
warning or error level still fails the test.
"""

import ctypes
import errno
import hashlib
import json
import os
import random
import re
import sqlite3
import stat
import struct
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import (
    ALICE, ALICE_RUN, BOB, BOB_RUN, DAY_NS, DEFAULT_AGENT, FILE_XATTRS, LEGACY_RUN, RUN_XATTRS,
    SHARED_RUN, XATTR_PREFIX, check_status_entry, entries_by_name, expected_files,
    expected_runs, promote_status, read_bytes, read_metadata, rfc3339, serde_pretty, sh,
    STATUS_KEYS, staging_files, store_state, system_content_type, ts_ns, validate_metadata,
    wait_until, walk_view, write_close, write_through, xattrs,
)

NEW_RUN = "7e57a11c-5e55-4a0b-9c1d-2f3e4a5b6c7d"      # exists nowhere yet
OTHER_NEW_RUN = "0ddba11a-1234-4cde-8f90-abcdef987654"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rand(n: int, seed=0) -> bytes:
    return random.Random(seed).randbytes(n)


def noisy(*names) -> dict:
    """mounter() arguments for a test that is refused something: a warning
    or error line is expected only when it names one of these."""
    pats = [re.escape(str(n)) for n in names]
    return {"expect_warnings": pats, "expect_errors": pats}


def P(m, *parts) -> Path:
    """A path under promote/."""
    return m.mnt.joinpath("promote", *parts)


def promote(m, run: str, name: str, data: bytes) -> None:
    """A direct upload in this process: open, write, close."""
    write_through(P(m, run, name), data)


def request(m, doc, name: str = "req-1.json") -> dict:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return write_close(P(m, name), data)


def run_fields(meta: dict) -> dict:
    return {k: meta[k] for k in ("run_id", "workflow_id", "user_directive", "created_at",
                                 "expires_at", "status")}


def assert_promoted(store, m, run: str, name: str, data: bytes, *, client: str = ALICE,
                    agent: str = DEFAULT_AGENT, t0: int | None = None,
                    retention: int | None = 7) -> tuple[dict, dict]:
    """name is committed: durable in the store, one valid metadata entry,
    shown at once in the view with its bytes and xattrs.  Returns
    (metadata, entry)."""
    run_dir = store.run_dir(client, run)
    assert (run_dir / name).is_file(), f"{run}/{name} not in the store"
    assert read_bytes(run_dir / name) == data, f"{run}/{name}: store bytes differ"
    meta = read_metadata(run_dir, retention_days=retention)
    entries = [a for a in meta["artifacts"] if a["filename"] == name]
    assert len(entries) == 1, f"{name}: {len(entries)} metadata entries"
    e = entries[0]
    assert e["agent_id"] == agent
    assert e["size_bytes"] == len(data)
    assert e["content_type"] == system_content_type(name), name
    if t0 is not None:
        assert t0 - 2 * 10**9 <= ts_ns(e["generated_at"]) <= time.time_ns() + 2 * 10**9, e
    view = m.mnt / run / name
    assert name in os.listdir(m.mnt / run), f"{name} not listed in /{run} after close"
    assert os.stat(view).st_size == len(data)
    assert read_bytes(view) == data, f"/{run}/{name}: view bytes differ"
    want = {XATTR_PREFIX + k: str(e[k]).encode() for k in FILE_XATTRS}
    want[XATTR_PREFIX + "sha256"] = sha(data).encode()
    assert xattrs(view) == want, name
    assert xattrs(m.mnt / run) == {XATTR_PREFIX + k: meta[k].encode() for k in RUN_XATTRS}
    return meta, e


def index_counts(store, client: str, run: str, filename: str | None = None) -> int:
    """Rows of the default index for a run (or one of its files)."""
    con = sqlite3.connect(f"file:{store.default_index}?mode=ro", uri=True)
    try:
        if filename is None:
            return con.execute("SELECT count(*) FROM runs WHERE client = ? AND run = ?",
                               (client, run)).fetchone()[0]
        return con.execute("SELECT count(*) FROM artifacts a JOIN runs r ON a.run_id = r.id"
                           " WHERE r.client = ? AND r.run = ? AND a.filename = ?",
                           (client, run, filename)).fetchone()[0]
    finally:
        con.close()


def status_of(m, run=None, file=None) -> list[dict]:
    return [e for e in promote_status(m.mnt)
            if (run is None or e["run"] == run) and (file is None or e["file"] == file)]


def files_of(run_dir: Path) -> dict:
    """name -> bytes of a run dir's artifacts (metadata.json left out)."""
    return {n: read_bytes(run_dir / n) for n in expected_files(run_dir) if n != "metadata.json"}


# ======================================================================== direct uploads

def test_acceptance_cp_then_ls_and_getfattr_sha256(store, mounter, tmp_path):
    """cp report.pdf promote/r1/ exits 0; ls r1/ shows it at once; its
    user.artifact.sha256 is what sha256sum says."""
    src = tmp_path / "report.pdf"
    src.write_bytes(b"%PDF-1.7\n" + rand(300_000, "pdf"))
    old = read_metadata(store.run_dir(ALICE, ALICE_RUN))
    m = mounter(store, ALICE)
    t0 = time.time_ns()
    r = sh('cd "$1" && cp "$2" promote/"$3"/', m.mnt, src, ALICE_RUN)
    assert (r.returncode, r.stderr) == (0, "")
    r = sh('ls "$1"', m.mnt / ALICE_RUN)
    assert "report.pdf" in r.stdout.split("\n"), r.stdout
    got = sh('getfattr --only-values -n user.artifact.sha256 "$1"', m.mnt / ALICE_RUN / "report.pdf")
    want = sh('sha256sum < "$1"', src).stdout.split()[0]
    assert (got.returncode, got.stdout) == (0, want)
    meta, e = assert_promoted(store, m, ALICE_RUN, "report.pdf", src.read_bytes(), t0=t0)
    assert e["content_type"] == "application/pdf"
    # the run's fields and the kernel-server's entry are kept
    assert run_fields(meta) == run_fields(old)
    assert meta["artifacts"][:-1] == old["artifacts"] and meta["artifacts"][-1] == e
    wait_until(lambda: os.listdir(P(m, ALICE_RUN)) == [], what="no longer in flight")


def test_mkdir_then_cp_makes_a_new_run(store, mounter, tmp_path):
    m = mounter(store, ALICE, **noisy(NEW_RUN))
    before = store_state(store)
    os.mkdir(P(m, NEW_RUN))
    assert sorted(os.listdir(P(m))) == sorted(expected_runs(store, ALICE) + [NEW_RUN, ".status"])
    assert stat.S_ISDIR(os.stat(P(m, NEW_RUN)).st_mode)
    assert os.listdir(P(m, NEW_RUN)) == []
    assert NEW_RUN not in os.listdir(m.mnt), "a run before its first file is promoted"
    assert store_state(store) == before
    r = sh('mkdir "$1"', P(m, NEW_RUN))
    assert r.returncode != 0 and "File exists" in r.stderr
    src = tmp_path / "data.csv"
    src.write_bytes(b"a,b\n1,2\n")
    t0 = time.time_ns()
    r = sh('cp "$1" "$2"/', src, P(m, NEW_RUN))
    assert (r.returncode, r.stderr) == (0, "")
    assert NEW_RUN in os.listdir(m.mnt)
    meta, e = assert_promoted(store, m, NEW_RUN, "data.csv", src.read_bytes(), t0=t0)
    assert (meta["workflow_id"], meta["user_directive"], meta["status"]) == ("", "", "active")
    assert t0 - 2 * 10**9 <= ts_ns(meta["created_at"]) <= time.time_ns() + 2 * 10**9
    assert ts_ns(meta["expires_at"]) - ts_ns(meta["created_at"]) == 7 * DAY_NS
    assert [a["filename"] for a in meta["artifacts"]] == ["data.csv"]
    assert sorted(os.listdir(store.run_dir(ALICE, NEW_RUN))) == ["data.csv", "metadata.json"]


def test_promote_lists_runs_and_status_and_nothing_else_resolves(store, mounter):
    m = mounter(store, ALICE)
    assert sorted(os.listdir(P(m))) == sorted(expected_runs(store, ALICE) + [".status"])
    st = os.stat(P(m, ".status"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o222 == 0
    for run in expected_runs(store, ALICE):
        assert stat.S_ISDIR(os.stat(P(m, run)).st_mode)
        assert os.listdir(P(m, run)) == []
    for name in (BOB_RUN, LEGACY_RUN, NEW_RUN, "promote"):
        with pytest.raises(FileNotFoundError):
            os.stat(P(m, name))
    with pytest.raises(FileNotFoundError):
        os.open(P(m, NEW_RUN, "f.txt"), os.O_WRONLY | os.O_CREAT, 0o644)


def test_cp_r_of_a_flat_directory(store, mounter, tmp_path):
    src = tmp_path / "out"
    src.mkdir()
    files = {"a.txt": b"alpha\n", "b.csv": b"x,y\n", "c.json": b'{"c": 1}', "d.md": b"# d\n",
             "noext": rand(5000, 1), "e.PNG": b"\x89PNG" + rand(70_000, 2), "empty.txt": b""}
    for n, d in files.items():
        (src / n).write_bytes(d)
    old = read_metadata(store.run_dir(ALICE, ALICE_RUN))
    m = mounter(store, ALICE)
    r = sh('cp -r "$1"/. "$2"/', src, P(m, ALICE_RUN))
    assert (r.returncode, r.stderr) == (0, "")
    # Nothing written to the empty file: its close() cannot be told from a
    # shell's close of a dup2()ed descriptor, so it lands at the release,
    # which the kernel sends just after close() returned (docs/promote.md).
    wait_until(lambda: status_of(m, run=ALICE_RUN, file="empty.txt"),
               what="the empty file landed at its release")
    for n, d in files.items():
        assert_promoted(store, m, ALICE_RUN, n, d)
    meta = read_metadata(store.run_dir(ALICE, ALICE_RUN))
    assert sorted(a["filename"] for a in meta["artifacts"]) == sorted(["notes.txt", *files])
    assert meta["artifacts"][0] == old["artifacts"][0]


def test_subdirectories_in_a_promote_run_are_refused(store, mounter, tmp_path):
    m = mounter(store, ALICE, **noisy(ALICE_RUN, "sub"))
    before = store_state(store)
    with pytest.raises(OSError):
        os.mkdir(P(m, ALICE_RUN, "sub"))
    assert store_state(store) == before
    assert os.listdir(P(m, ALICE_RUN)) == []
    # cp -r of a tree: the flat files go in, the subdirectory is refused
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "top.txt").write_bytes(b"top")
    (src / "sub" / "inner.txt").write_bytes(b"inner")
    r = sh('cp -r "$1"/. "$2"/', src, P(m, ALICE_RUN))
    assert r.returncode != 0 and "sub" in r.stderr, r.stderr
    assert_promoted(store, m, ALICE_RUN, "top.txt", b"top")
    assert "inner.txt" not in os.listdir(store.run_dir(ALICE, ALICE_RUN))
    assert not (store.run_dir(ALICE, ALICE_RUN) / "sub").exists()
    # One line a refusal: in the log and in .status, naming the directory.
    refused = [e for e in promote_status(m.mnt) if e["file"] == "sub/"]
    assert len(refused) == 2 and {e["result"] for e in refused} == {"EPERM"}, refused
    assert "runs are flat" in refused[0]["reason"]
    assert len([l for l in m.log_lines("warning") if "file sub/" in l]) == 2


def test_setattr_in_promote_changes_nothing_in_the_store(store, mounter):
    """tar, rsync and cp -p set modes and times on what they create: in
    promote/ that is refused or accepted and ignored, and never reaches the
    store or the view."""
    m = mounter(store, ALICE, **noisy(ALICE_RUN))
    before = store_state(store)
    view = walk_view(m.mnt, volatile=("promote/.status",))
    for op in (lambda: os.chmod(P(m, ALICE_RUN), 0o700),
               lambda: os.utime(P(m, ALICE_RUN), ns=(10**9, 10**9)),
               lambda: os.chown(P(m, ALICE_RUN), 1234, 1234)):
        try:
            op()
        except OSError as e:
            assert e.errno in (errno.EROFS, errno.EACCES, errno.EPERM), e
    assert store_state(store) == before
    assert walk_view(m.mnt, volatile=("promote/.status",)) == view
    fd = os.open(P(m, ALICE_RUN, "moded.sh"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"#!/bin/sh\n")
        for op in (lambda: os.fchmod(fd, 0o4777), lambda: os.utime(fd, ns=(10**9, 10**9)),
                   lambda: os.fchown(fd, 1234, 1234)):
            try:
                op()
            except OSError as e:
                assert e.errno in (errno.EROFS, errno.EACCES, errno.EPERM), e
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "moded.sh", b"#!/bin/sh\n")
    st = os.stat(store.run_dir(ALICE, ALICE_RUN) / "moded.sh")
    assert not st.st_mode & (stat.S_ISUID | stat.S_ISGID | 0o002), oct(st.st_mode)
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_tar_x_into_a_promote_run(store, mounter, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = {"one.txt": b"one\n", "two.bin": rand(2_000_000, 3), "three.csv": b"3,3\n"}
    for n, d in files.items():
        (src / n).write_bytes(d)
    archive = tmp_path / "a.tar"
    r = sh('tar -cf "$1" -C "$2" one.txt two.bin three.csv', archive, src)
    assert r.returncode == 0, r.stderr
    m = mounter(store, ALICE)
    r = sh('tar -xf "$1" -C "$2"', archive, P(m, ALICE_RUN))
    assert (r.returncode, r.stderr) == (0, "")
    for n, d in files.items():
        assert_promoted(store, m, ALICE_RUN, n, d)


def test_rsync_inplace_into_a_promote_run(store, mounter, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    files = {"r1.txt": b"rsync one\n", "r2.bin": rand(1_500_000, 4)}
    for n, d in files.items():
        (src / n).write_bytes(d)
    m = mounter(store, ALICE)
    r = sh('rsync -r --inplace "$1"/ "$2"/', src, P(m, ALICE_RUN))
    assert (r.returncode, r.stderr) == (0, "")
    for n, d in files.items():
        assert_promoted(store, m, ALICE_RUN, n, d)


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_shell_redirection(store, mounter, shell):
    m = mounter(store, ALICE)
    script = ('cd "$1"/promote/"$2" && echo hello > greeting.txt && '
              'printf "%s\\n" one two >> list.txt && { echo a; echo b; } > group.txt')
    r = sh(script, m.mnt, ALICE_RUN, shell=shell)
    assert (r.returncode, r.stderr) == (0, "")
    assert_promoted(store, m, ALICE_RUN, "greeting.txt", b"hello\n")
    assert_promoted(store, m, ALICE_RUN, "list.txt", b"one\ntwo\n")
    assert_promoted(store, m, ALICE_RUN, "group.txt", b"a\nb\n")
    r = sh('echo bye > "$1"/greeting.txt', P(m, ALICE_RUN), shell=shell)
    assert (r.returncode, r.stderr) == (0, "")
    assert_promoted(store, m, ALICE_RUN, "greeting.txt", b"bye\n")


def test_dd_patterns(store, mounter, tmp_path):
    src = tmp_path / "src.bin"
    data = rand(10_000, 5)
    src.write_bytes(data)
    big = tmp_path / "big.bin"
    big.write_bytes(rand(5 * 1024 * 1024 + 17, 6))
    cases = {
        "seek-notrunc.bin": ('dd if="$1" of="$2" bs=4096 seek=3 conv=notrunc status=none',
                             src, b"\0" * 12288 + data),
        "seek-trunc.bin": ('dd if="$1" of="$2" bs=1000 seek=5 status=none', src,
                           b"\0" * 5000 + data),
        "skip-count.bin": ('dd if="$1" of="$2" bs=1024 skip=2 count=5 status=none', src,
                           data[2048:2048 + 5120]),
        "sparse.bin": ('dd if="$1" of="$2" bs=1 seek=1048576 count=0 status=none', "/dev/null",
                       b"\0" * 1048576),
        "big.bin": ('dd if="$1" of="$2" bs=1M iflag=fullblock status=none', big,
                    big.read_bytes()),
        "tiny-blocks.bin": ('dd if="$1" of="$2" bs=7 status=none', src, data),
    }
    m = mounter(store, ALICE)
    for name, (script, inp, want) in cases.items():
        r = sh(script, inp, P(m, ALICE_RUN, name))
        assert (r.returncode, r.stderr) == (0, ""), name
        assert_promoted(store, m, ALICE_RUN, name, want)


def test_ftruncate_shrink_and_grow(store, mounter):
    m = mounter(store, ALICE)
    data = rand(1000, 7)
    fd = os.open(P(m, ALICE_RUN, "trunc.bin"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        os.ftruncate(fd, 300_000)
        assert os.fstat(fd).st_size == 300_000
        os.pwrite(fd, b"END", 300_000)
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "trunc.bin", data[:100] + b"\0" * 299_900 + b"END")


def test_a_header_rewritten_after_the_body_is_hashed_as_stored(store, mounter):
    """What zip and tar do: a placeholder header, the body, then the header
    written again over bytes already hashed.  The SHA-256 is the stored
    bytes', not the first header's."""
    m = mounter(store, ALICE)
    body = rand(3 * 1024 * 1024 + 17, 12)
    fd = os.open(P(m, ALICE_RUN, "archive.zip"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"\0" * 64)
        for off in range(0, len(body), 128 * 1024):
            os.write(fd, body[off:off + 128 * 1024])
        assert os.pwrite(fd, b"HEADER" * 10, 0) == 60
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "archive.zip", b"HEADER" * 10 + b"\0" * 4 + body)


def test_large_writes_answered_before_they_are_stored_read_back_in_order(store, mounter):
    """Large aligned writes are answered before their bytes reach the
    staged file (they go past the page cache behind the writer's back).
    Whatever comes next sees them in order: a read and fstat right after
    (same fd and a second one), a small write over the first block, a
    large rewrite below the last one, a truncate, and the SHA-256."""
    m = mounter(store, ALICE)
    block = 512 * 1024
    model = bytearray(rand(8 * block, 21))
    path = P(m, ALICE_RUN, "behind.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, len(model), block):
            assert os.pwrite(fd, model[off:off + block], off) == block
        assert os.fstat(fd).st_size == len(model)
        assert os.pread(fd, len(model), 0) == model
        assert read_bytes(path) == model
        os.pwrite(fd, b"HEADER", 10)
        model[10:16] = b"HEADER"
        again = rand(block, 22)
        assert os.pwrite(fd, again, 2 * block) == block
        model[2 * block:3 * block] = again
        assert os.pwrite(fd, again, 8 * block) == block
        model += again
        os.ftruncate(fd, 8 * block + 4096)
        del model[8 * block + 4096:]
        assert os.pread(fd, len(model) + 10, 0) == model
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "behind.bin", bytes(model))


def test_an_upload_asks_for_large_writes(store, mounter):
    """cp and dd size their writes by st_blksize: an upload reports a block
    of hundreds of KiB (a power of two within the largest request), not
    the 4 KiB of the store, so a copy sends few round trips."""
    m = mounter(store, ALICE)
    fd = os.open(P(m, ALICE_RUN, "block.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        block = os.fstat(fd).st_blksize
        assert block >= 256 * 1024 and block & (block - 1) == 0, block
        assert os.stat(P(m, ALICE_RUN, "block.bin")).st_blksize == block
        os.write(fd, b"x")
    finally:
        os.close(fd)
    stored = store.run_dir(ALICE, ALICE_RUN) / "block.bin"
    assert os.stat(m.mnt / ALICE_RUN / "block.bin").st_blksize == os.stat(stored).st_blksize


def test_random_writes_are_read_back_before_close(store, mounter):
    """Overlapping pwrites, shrinking and growing ftruncates; the staged
    file reads back right at every step (same fd and a second one), is
    listed in flight, and is not promoted before close."""
    m = mounter(store, ALICE)
    path = P(m, ALICE_RUN, "random.bin")
    rng = random.Random(11)
    model = bytearray()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(300):
            op = rng.random()
            if op < 0.6:
                off = rng.randrange(0, len(model) + 5000)
                chunk = rng.randbytes(rng.randrange(1, 9000))
                assert os.pwrite(fd, chunk, off) == len(chunk)
                if len(model) < off:
                    model.extend(b"\0" * (off - len(model)))
                model[off:off + len(chunk)] = chunk
            elif op < 0.8:
                size = rng.randrange(0, 60_000)
                os.ftruncate(fd, size)
                model = model[:size] + bytearray(max(0, size - len(model)))
            else:
                assert os.pread(fd, len(model) + 100, 0) == model
                assert os.fstat(fd).st_size == len(model)
        assert os.listdir(P(m, ALICE_RUN)) == ["random.bin"]
        assert read_bytes(path) == model                    # another fd, opened and closed
        assert "random.bin" not in os.listdir(m.mnt / ALICE_RUN)
        assert not (store.run_dir(ALICE, ALICE_RUN) / "random.bin").exists()
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "random.bin", bytes(model))
    wait_until(lambda: os.listdir(P(m, ALICE_RUN)) == [], what="no longer in flight")


def test_an_upload_in_flight_is_staged_under_artifactfs_staging(store, mounter):
    m = mounter(store, ALICE)
    payload = b"STAGED-" + rand(100_000, 8)
    fd = os.open(P(m, ALICE_RUN, "inflight.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, payload)
        staged = staging_files(store, ALICE)
        base = store.root / ".artifactfs" / "staging" / ALICE
        assert any(read_bytes(base / f) == payload for f in staged), staged
        assert not (store.run_dir(ALICE, ALICE_RUN) / "inflight.bin").exists()
        assert os.stat(P(m, ALICE_RUN, "inflight.bin")).st_size == len(payload)
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "inflight.bin", payload)


def test_re_promotion_replaces_bytes_and_entry(store, mounter):
    m = mounter(store, ALICE)
    name = "again.txt"
    v1, v2, v3 = b"A" * 1000, b"B" * 1000, b"short"
    promote(m, ALICE_RUN, name, v1)
    _, e1 = assert_promoted(store, m, ALICE_RUN, name, v1)
    order = [a["filename"] for a in read_metadata(store.run_dir(ALICE, ALICE_RUN))["artifacts"]]
    promote(m, ALICE_RUN, name, v2)                       # same size: no stale page cache
    _, e2 = assert_promoted(store, m, ALICE_RUN, name, v2)
    assert ts_ns(e2["generated_at"]) >= ts_ns(e1["generated_at"])
    promote(m, ALICE_RUN, name, v3)
    meta, _ = assert_promoted(store, m, ALICE_RUN, name, v3)
    assert [a["filename"] for a in meta["artifacts"]] == order


@pytest.mark.parametrize("name", ["report.pdf", "PLOT.PNG", "table.csv", "notes.md", "data.json",
                                  "readme.txt", "archive.tar.gz", "Makefile", "weird.zzzunknown",
                                  "trailing.", "résumé final.txt", "x" * 251 + ".md"])
def test_content_type_comes_from_the_system_mime_table(store, mounter, name):
    table_sample = {"a.pdf": "application/pdf", "a.png": "image/png", "a.csv": "text/csv",
                    "a.md": "text/markdown", "a.json": "application/json", "a.txt": "text/plain"}
    for n, t in table_sample.items():
        assert system_content_type(n) == t, "unexpected /etc/mime.types"
    m = mounter(store, ALICE)
    promote(m, ALICE_RUN, name, b"content of " + name.encode())
    _, e = assert_promoted(store, m, ALICE_RUN, name, b"content of " + name.encode())
    if name in ("Makefile", "weird.zzzunknown", "trailing."):
        assert e["content_type"] == "application/octet-stream"


def test_metadata_stays_valid_through_promotions_and_deletions(store, mounter, tmp_path):
    store.add_session_output(NEW_RUN, {"s1.txt": b"session one", "s2.csv": b"s,2\n"})
    m = mounter(store, ALICE)
    os.mkdir(P(m, NEW_RUN))
    present = {}
    for i in range(6):
        name = f"file-{i}.txt"
        present[name] = f"v1 {i}".encode()
        promote(m, NEW_RUN, name, present[name])
    for name in ("file-1.txt", "file-4.txt"):
        assert sh('rm "$1"', m.mnt / NEW_RUN / name).returncode == 0
        del present[name]
    present["file-2.txt"] = b"v2 replaced"
    promote(m, NEW_RUN, "file-2.txt", present["file-2.txt"])
    assert request(m, {"run_id": NEW_RUN, "files": ["s1.txt", "s2.csv"]})["close"] == "ok"
    present.update({"s1.txt": b"session one", "s2.csv": b"s,2\n"})
    present["file-1.txt"] = b"back again"
    promote(m, NEW_RUN, "file-1.txt", present["file-1.txt"])
    meta = read_metadata(store.run_dir(ALICE, NEW_RUN))
    assert sorted(a["filename"] for a in meta["artifacts"]) == sorted(present)
    assert files_of(store.run_dir(ALICE, NEW_RUN)) == present
    for name, data in present.items():
        assert entries_by_name(meta)[name]["size_bytes"] == len(data)
        assert os.getxattr(m.mnt / NEW_RUN / name, "user.artifact.sha256") == sha(data).encode()
    for run in expected_runs(store, ALICE):
        read_metadata(store.run_dir(ALICE, run))


# ======================================================================== interop

def kernel_server_doc(run_id: str, files: dict) -> dict:
    """metadata.json exactly as the kernel-server writes it, with the
    variety it produces: fractions of 9, 6, 3 and 0 digits, unicode and
    escapes, a recorded size that differs from the file, an entry whose
    file is gone, a content type the MIME table would not give."""
    created = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=2)
    t = lambda s, ns: rfc3339(created + timedelta(seconds=s), nanos=ns)  # noqa: E731
    return {
        "run_id": run_id,
        "workflow_id": "wf-kernel-7",
        "user_directive": 'Résumé 👍 "quoted" \\ back\nsecond line\ttab / slash',
        "created_at": t(0, 123456789),
        "expires_at": rfc3339(created + timedelta(days=7), nanos=123456789),
        "artifacts": [
            {"filename": "report.md", "agent_id": "agent-ß", "generated_at": t(10, 0),
             "size_bytes": len(files["report.md"]), "content_type": "text/markdown"},
            {"filename": "run.sh", "agent_id": "", "generated_at": t(11, 120_000_000),
             "size_bytes": len(files["run.sh"]), "content_type": "application/octet-stream"},
            {"filename": "data.csv", "agent_id": "coder", "generated_at": t(12, 123_456_000),
             "size_bytes": 999, "content_type": "text/csv"},
            {"filename": "ghost.txt", "agent_id": "gone", "generated_at": t(13, 1),
             "size_bytes": 2**53 + 1, "content_type": "text/plain"},
        ],
        "status": "active",
    }


def test_kernel_server_entries_are_kept_byte_for_byte(store, mounter):
    files = {"report.md": b"# kernel report\n", "run.sh": b"#!/bin/sh\n", "data.csv": b"k,v\n"}
    doc = kernel_server_doc("ks-run", files)
    run = store.add_run(ALICE, "ks-run", files, metadata=doc)
    raw = read_bytes(run.path / "metadata.json")
    assert validate_metadata(raw, "ks-run") == doc          # the fixture passes the check
    m = mounter(store, ALICE)
    promote(m, "ks-run", "added.json", b'{"added": true}')
    meta, e = assert_promoted(store, m, "ks-run", "added.json", b'{"added": true}')
    assert run_fields(meta) == run_fields(doc)
    assert meta["artifacts"] == doc["artifacts"] + [e]
    old_text = serde_pretty(doc)[:-len(b"\n  ],\n  \"status\": \"active\"\n}")]
    assert read_bytes(run.path / "metadata.json").startswith(old_text)
    # replacing one of the kernel-server's entries touches only that one
    promote(m, "ks-run", "report.md", b"# replaced by artifactfs\n")
    meta, e2 = assert_promoted(store, m, "ks-run", "report.md", b"# replaced by artifactfs\n")
    rest = [a for a in meta["artifacts"] if a["filename"] != "report.md"]
    assert rest == doc["artifacts"][1:] + [e]
    assert run_fields(meta) == run_fields(doc)


@pytest.mark.parametrize("same_size", [False, True])
def test_kernel_server_rewrite_between_two_promotions_is_kept(store, mounter, same_size):
    """The daemon keeps the metadata.json it wrote last, parsed, for the
    next commit into the run: a rewrite by the kernel-server in between
    (even one of the very same size) must be read again, never overwritten
    with the daemon's older copy."""
    m = mounter(store, ALICE)
    os.mkdir(P(m, NEW_RUN))
    promote(m, NEW_RUN, "first.txt", b"1")
    path = store.run_dir(ALICE, NEW_RUN) / "metadata.json"
    doc = json.loads(read_bytes(path))
    agent = doc["artifacts"][0]["agent_id"]
    doc["artifacts"][0]["agent_id"] = agent[:-1] + ("Z" if agent[-1:] != "Z" else "Y")
    if not same_size:
        doc["artifacts"].append({"filename": "from-kernel.txt", "agent_id": "k",
                                 "generated_at": doc["artifacts"][0]["generated_at"],
                                 "size_bytes": 1, "content_type": "text/plain"})
        (path.parent / "from-kernel.txt").write_bytes(b"k")
    text = serde_pretty(doc)
    assert (len(text) == path.stat().st_size) == same_size
    tmp = path.parent / ".metadata.json.tmp"
    tmp.write_bytes(text)
    os.rename(tmp, path)
    promote(m, NEW_RUN, "second.txt", b"2")
    meta = read_metadata(store.run_dir(ALICE, NEW_RUN))
    assert meta["artifacts"][:-1] == doc["artifacts"]
    assert meta["artifacts"][-1]["filename"] == "second.txt"
    assert run_fields(meta) == run_fields(doc)


# ======================================================================== ids: options, xattrs

def test_mount_options_give_the_defaults(store, mounter):
    m = mounter(store, ALICE, "-o", "agent=bot-7", "-o", "workflow=wf-opt",
                "-o", "directive=Plot the numbers", "-o", "retention=30")
    old = read_metadata(store.run_dir(ALICE, ALICE_RUN))
    os.mkdir(P(m, NEW_RUN))
    t0 = time.time_ns()
    promote(m, NEW_RUN, "plot.png", b"\x89PNG fake")
    meta, _ = assert_promoted(store, m, NEW_RUN, "plot.png", b"\x89PNG fake", agent="bot-7",
                              t0=t0, retention=30)
    assert (meta["workflow_id"], meta["user_directive"]) == ("wf-opt", "Plot the numbers")
    promote(m, ALICE_RUN, "more.txt", b"more")
    meta, _ = assert_promoted(store, m, ALICE_RUN, "more.txt", b"more", agent="bot-7",
                              retention=None)
    for k in ("workflow_id", "user_directive", "created_at"):
        assert meta[k] == old[k], k
    assert meta["artifacts"][0] == old["artifacts"][0]


def test_setxattr_overrides_agent_workflow_and_directive(store, mounter):
    m = mounter(store, ALICE, "-o", "agent=default-agent")
    os.mkdir(P(m, NEW_RUN))
    directive = "Résumé 👍 the \"numbers\" \\ please"
    os.setxattr(P(m, NEW_RUN), "user.artifact.workflow_id", b"wf-from-xattr")
    os.setxattr(P(m, NEW_RUN), "user.artifact.user_directive", directive.encode())
    fd = os.open(P(m, NEW_RUN, "a.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"a")
    os.setxattr(fd, "user.artifact.agent_id", b"agent-by-fd")
    os.close(fd)
    fd = os.open(P(m, NEW_RUN, "b.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"b")
    os.setxattr(P(m, NEW_RUN, "b.txt"), "user.artifact.agent_id", "agent-ß-by-path".encode())
    os.close(fd)
    promote(m, NEW_RUN, "c.txt", b"c")
    meta, _ = assert_promoted(store, m, NEW_RUN, "a.txt", b"a", agent="agent-by-fd")
    assert_promoted(store, m, NEW_RUN, "b.txt", b"b", agent="agent-ß-by-path")
    assert_promoted(store, m, NEW_RUN, "c.txt", b"c", agent="default-agent")
    meta = read_metadata(store.run_dir(ALICE, NEW_RUN))
    assert (meta["workflow_id"], meta["user_directive"]) == ("wf-from-xattr", directive)
    assert os.getxattr(m.mnt / NEW_RUN, "user.artifact.user_directive") == directive.encode()


BAD_VALUES = {
    "control_char": (b"ab\x01cd", errno.EINVAL),
    "newline": (b"line\nbreak", errno.EINVAL),
    "delete_char": (b"del\x7f", errno.EINVAL),
    "c1_control": ("nel\u0085".encode(), errno.EINVAL),
    "invalid_utf8": (b"caf\xe9", errno.EINVAL),
    "truncated_utf8": (b"caf\xc3", errno.EINVAL),
    "overlong_utf8": (b"\xc0\xaf", errno.EINVAL),
    "surrogate": (b"\xed\xa0\x80", errno.EINVAL),
    "too_long": (b"a" * 4097, errno.E2BIG),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_xattr_values_are_refused(store, mounter, case):
    value, err = BAD_VALUES[case]
    m = mounter(store, ALICE, **noisy(NEW_RUN, "x.txt"))
    os.mkdir(P(m, NEW_RUN))
    for attr in ("user.artifact.workflow_id", "user.artifact.user_directive"):
        with pytest.raises(OSError) as exc:
            os.setxattr(P(m, NEW_RUN), attr, value)
        assert exc.value.errno == err, (attr, exc.value)
    fd = os.open(P(m, NEW_RUN, "x.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"x")
        with pytest.raises(OSError) as exc:
            os.setxattr(fd, "user.artifact.agent_id", value)
        assert exc.value.errno == err
    finally:
        os.close(fd)
    meta, _ = assert_promoted(store, m, NEW_RUN, "x.txt", b"x")       # defaults, not the value
    assert (meta["workflow_id"], meta["user_directive"]) == ("", "")


def test_xattr_values_of_4096_bytes_are_accepted(store, mounter):
    m = mounter(store, ALICE)
    os.mkdir(P(m, NEW_RUN))
    big = "é" * 2048                                     # 4096 bytes
    os.setxattr(P(m, NEW_RUN), "user.artifact.user_directive", big.encode())
    fd = os.open(P(m, NEW_RUN, "x.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"x")
    os.setxattr(fd, "user.artifact.agent_id", b"a" * 4096)
    os.close(fd)
    meta, _ = assert_promoted(store, m, NEW_RUN, "x.txt", b"x", agent="a" * 4096)
    assert meta["user_directive"] == big


# ======================================================================== requests

def test_large_files_hashed_at_their_commit_land_whole(store, mounter):
    """Files the daemon cannot hash as they arrive, and large enough to be
    flushed while the commit hashes them: an upload written back to front
    and a session file promoted by a request.  Both land byte for byte
    with their SHA-256."""
    rng = random.Random(16)
    written = rng.randbytes(12 << 20)
    session = rng.randbytes((9 << 20) + 123)
    store.add_session_output(ALICE_RUN, {"big.out": session})
    m = mounter(store, ALICE)
    fd = os.open(P(m, ALICE_RUN, "back-to-front.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 0o644)
    try:
        for off in reversed(range(0, len(written), 256 << 10)):
            assert os.pwrite(fd, written[off:off + (256 << 10)], off) > 0
    finally:
        os.close(fd)
    assert_promoted(store, m, ALICE_RUN, "back-to-front.bin", written)
    assert request(m, {"run_id": ALICE_RUN, "filename": "big.out"}) == \
        {"write": "ok", "close": "ok"}
    assert_promoted(store, m, ALICE_RUN, "big.out", session)


def test_request_promotes_one_session_file(store, mounter):
    store.add_session_output(ALICE_RUN, {"out.csv": b"q,r\n1,2\n"})
    m = mounter(store, ALICE)
    t0 = time.time_ns()
    assert request(m, {"run_id": ALICE_RUN, "filename": "out.csv"}) == \
        {"write": "ok", "close": "ok"}
    assert_promoted(store, m, ALICE_RUN, "out.csv", b"q,r\n1,2\n", t0=t0)
    wait_until(lambda: "req-1.json" not in os.listdir(P(m)), what="request file gone")
    with pytest.raises(FileNotFoundError):
        os.stat(P(m, "req-1.json"))
    for dirpath, dirnames, filenames in os.walk(store.root):
        assert "req-1.json" not in filenames, dirpath
    # the session file itself is left alone
    assert read_bytes(store.root / "sessions" / ALICE_RUN / "output" / "out.csv") == b"q,r\n1,2\n"


def test_request_with_several_files_and_ids_makes_a_new_run(store, mounter):
    files = {"a.txt": b"A", "b.md": b"# B", "c.json": b"{}"}
    store.add_session_output(NEW_RUN, files)
    m = mounter(store, ALICE)
    r = request(m, {"run_id": NEW_RUN, "files": ["c.json", "a.txt", "b.md"],
                    "workflow_id": "wf-req", "agent_id": "req-agent",
                    "user_directive": "Do the thing ✓"}, name="several.json")
    assert r == {"write": "ok", "close": "ok"}
    for n, d in files.items():
        meta, _ = assert_promoted(store, m, NEW_RUN, n, d, agent="req-agent")
    assert [a["filename"] for a in meta["artifacts"]] == ["c.json", "a.txt", "b.md"]
    assert (meta["workflow_id"], meta["user_directive"]) == ("wf-req", "Do the thing ✓")
    assert NEW_RUN in os.listdir(m.mnt)
    wait_until(lambda: "several.json" not in os.listdir(P(m)), what="request file gone")


class Inotify:
    """The events of one directory, as a watcher of the store (the
    kernel-server, another host's daemon, our own) sees them."""
    IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE, IN_MOVED_TO = 0x2, 0x4, 0x8, 0x80
    NAMES = {0x2: "MODIFY", 0x4: "ATTRIB", 0x8: "CLOSE_WRITE", 0x80: "MOVED_TO"}

    def __init__(self, path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0
        mask = self.IN_MODIFY | self.IN_ATTRIB | self.IN_CLOSE_WRITE | self.IN_MOVED_TO
        assert self.libc.inotify_add_watch(self.fd, str(path).encode(), mask) >= 0

    def events(self) -> list[tuple[str, str]]:
        out = []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return out
        pos = 0
        while pos < len(data):
            _wd, mask, _cookie, length = struct.unpack_from("iIII", data, pos)
            name = data[pos + 16:pos + 16 + length].rstrip(b"\0").decode()
            pos += 16 + length
            out += [(self.NAMES[bit], name) for bit in self.NAMES if mask & bit]
        return out

    def close(self):
        os.close(self.fd)


@pytest.mark.parametrize("how", ["upload", "request"])
def test_a_commit_is_only_renames_to_watchers_of_the_run(store, mounter, how):
    """What a commit shows a watcher of the run dir is two renames (the
    file, then metadata.json): never a write, a close after writing or an
    attribute change there, which would read as an in-place rewrite and
    make every watcher (the daemon's own) index the whole run again.

    Found by profiling promotion into a large run: the upload's descriptor
    and the metadata.json draft were closed after their renames, and each
    commit re-indexed the run (300 small files: 2.23 s, 1.22 s after)."""
    store.add_session_output(ALICE_RUN, {"s.csv": b"s\n"})
    m = mounter(store, ALICE)
    watcher = Inotify(store.run_dir(ALICE, ALICE_RUN))
    try:
        if how == "upload":
            promote(m, ALICE_RUN, "u.txt", b"uploaded")
            name = "u.txt"
        else:
            assert request(m, {"run_id": ALICE_RUN, "filename": "s.csv"})["close"] == "ok"
            name = "s.csv"
        wait_until(lambda: name in entries_by_name(read_metadata(store.run_dir(ALICE, ALICE_RUN))),
                   what="the commit")
        time.sleep(0.3)                        # a late close would come now
        events = watcher.events()
    finally:
        watcher.close()
    assert events == [("MOVED_TO", name), ("MOVED_TO", "metadata.json")], events


def test_request_ids_default_to_the_mount_options(store, mounter):
    store.add_session_output(NEW_RUN, {"d.txt": b"defaults"})
    m = mounter(store, ALICE, "-o", "agent=mnt-agent", "-o", "workflow=wf-mnt",
                "-o", "directive=from the mount")
    assert request(m, {"run_id": NEW_RUN, "files": ["d.txt"]})["close"] == "ok"
    meta, _ = assert_promoted(store, m, NEW_RUN, "d.txt", b"defaults", agent="mnt-agent")
    assert (meta["workflow_id"], meta["user_directive"]) == ("wf-mnt", "from the mount")


def test_request_stops_at_the_first_failure(store, mounter):
    store.add_session_output(ALICE_RUN, {"first.txt": b"1", "third.txt": b"3"})
    m = mounter(store, ALICE, **noisy(ALICE_RUN, "missing.txt", "req-1.json"))
    r = request(m, {"run_id": ALICE_RUN, "files": ["first.txt", "missing.txt", "third.txt"]})
    assert r == {"write": "ok", "close": "ENOENT"}
    assert_promoted(store, m, ALICE_RUN, "first.txt", b"1")
    assert not (store.run_dir(ALICE, ALICE_RUN) / "third.txt").exists()
    assert "third.txt" not in entries_by_name(read_metadata(store.run_dir(ALICE, ALICE_RUN)))
    results = [(e["file"], e["result"]) for e in status_of(m, run=ALICE_RUN)]
    assert results == [("first.txt", "ok"), ("missing.txt", "ENOENT")]
    wait_until(lambda: "req-1.json" not in os.listdir(P(m)), what="request file gone")


BAD_REQUESTS = {
    "not_json": b"this is not json",
    "empty": b"",
    "truncated": b'{"run_id": "' + ALICE_RUN.encode() + b'", "filename": "a.txt"',
    "array": b'["a.txt"]',
    "invalid_utf8": b'{"run_id": "' + ALICE_RUN.encode() + b'", "filename": "a\xff.txt"}',
    "no_run_id": {"files": ["a.txt"]},
    "no_files": {"run_id": ALICE_RUN},
    "files_not_a_list": {"run_id": ALICE_RUN, "files": "a.txt"},
    "file_not_a_string": {"run_id": ALICE_RUN, "files": [1]},
    "run_id_not_a_string": {"run_id": 5, "filename": "a.txt"},
    "agent_not_a_string": {"run_id": ALICE_RUN, "filename": "a.txt", "agent_id": 7},
    "run_id_traversal": {"run_id": "../bob", "filename": "a.txt"},
    "run_id_with_space": {"run_id": "has space", "filename": "a.txt"},
    "run_id_promote": {"run_id": "promote", "filename": "a.txt"},
    "filename_traversal": {"run_id": ALICE_RUN, "filename": "../../../etc/passwd"},
    "filename_with_slash": {"run_id": ALICE_RUN, "filename": "sub/a.txt"},
    "filename_dot": {"run_id": ALICE_RUN, "filename": ".hidden"},
    "filename_metadata": {"run_id": ALICE_RUN, "filename": "metadata.json"},
    "filename_control": {"run_id": ALICE_RUN, "filename": "a\u0001b.txt"},
    "filename_empty": {"run_id": ALICE_RUN, "filename": ""},
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_einval_and_changes_nothing(store, mounter, case):
    store.add_session_output(ALICE_RUN, {"a.txt": b"a", "metadata.json": b"{}",
                                         ".hidden": b"h"})
    m = mounter(store, ALICE, **noisy("req-1.json", ALICE_RUN))
    before = store_state(store)
    got = request(m, BAD_REQUESTS[case])
    if case == "empty":
        # Nothing written: a close cannot be told from the shell's close of
        # a descriptor it dup2()ed before writing, so the empty document is
        # judged when the file is released, after close() returned.
        assert got in ({"write": "ok", "close": "EINVAL"}, {"write": "ok", "close": "ok"}), got
    else:
        assert got == {"write": "ok", "close": "EINVAL"}
    wait_until(lambda: promote_status(m.mnt), what="a .status entry")
    last = check_status_entry(promote_status(m.mnt)[-1])
    assert (last["action"], last["result"]) == ("promote", "EINVAL")
    assert store_state(store) == before
    wait_until(lambda: "req-1.json" not in os.listdir(P(m)), what="request file gone")


def test_request_for_a_missing_source_is_enoent(store, mounter, tmp_path):
    store.add_session_output(ALICE_RUN, {"other.txt": b"o"})
    m = mounter(store, ALICE, **noisy("req", ALICE_RUN, NEW_RUN))
    before = store_state(store)
    req = tmp_path / "req-1.json"
    req.write_text(json.dumps({"run_id": ALICE_RUN, "filename": "absent.txt"}))
    r = sh('cp "$1" "$2"/', req, P(m))
    assert r.returncode != 0 and "No such file or directory" in r.stderr, r.stderr
    assert request(m, {"run_id": NEW_RUN, "filename": "x.txt"})["close"] == "ENOENT"  # no session
    assert store_state(store) == before
    assert NEW_RUN not in os.listdir(P(m))
    wait_until(lambda: "req-1.json" not in os.listdir(P(m)), what="request file gone")


def _make_special(out: Path, kind: str, store) -> None:
    target = out / "target.txt"
    target.write_bytes(b"target bytes")
    src = out / "special"
    if kind == "symlink":
        os.symlink("target.txt", src)
    elif kind == "symlink_to_other_tenant":
        os.symlink(store.run_dir(BOB, BOB_RUN) / "bob-only.txt", src)
    elif kind == "dangling_symlink":
        os.symlink("nowhere.txt", src)
    elif kind == "fifo":
        os.mkfifo(src)
    elif kind == "directory":
        src.mkdir()
        (src / "inner.txt").write_bytes(b"inner")
    elif kind == "hardlink":
        os.link(target, src)
    elif kind == "socket":
        r = subprocess.run([sys.executable, "-c",
                            "import socket; socket.socket(socket.AF_UNIX).bind('special')"],
                           cwd=out, capture_output=True)
        assert r.returncode == 0, r.stderr
    elif kind == "char_device":
        os.mknod(src, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["symlink", "symlink_to_other_tenant", "dangling_symlink",
                                  "fifo", "directory", "hardlink", "socket", "char_device"])
def test_request_refuses_a_source_that_is_not_a_plain_file(store, mounter, kind):
    out = store.root / "sessions" / ALICE_RUN / "output"
    out.mkdir(parents=True)
    _make_special(out, kind, store)
    m = mounter(store, ALICE, **noisy("req-1.json", ALICE_RUN, "special"))
    before = store_state(store)
    t = time.monotonic()
    r = request(m, {"run_id": ALICE_RUN, "filename": "special"})      # times out if it hangs
    assert r == {"write": "ok", "close": "EINVAL"}, r
    assert time.monotonic() - t < 5
    assert store_state(store) == before
    assert "special" not in os.listdir(m.mnt / ALICE_RUN)


def test_request_for_another_tenants_run_is_permission_denied(store, mounter, tmp_path):
    store.add_session_output(BOB_RUN, {"stolen.txt": b"from bob's session"})
    m = mounter(store, ALICE, **noisy("req", BOB_RUN, "stolen.txt"))
    before = store_state(store)
    req = tmp_path / "req.json"
    req.write_text(json.dumps({"run_id": BOB_RUN, "filename": "stolen.txt"}))
    r = sh('cp "$1" "$2"/', req, P(m))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert store_state(store) == before
    wait_until(lambda: "req.json" not in os.listdir(P(m)), what="request file gone")
    # a shell builtin ignores close()'s result: .status tells
    r = sh('echo "$1" > "$2"/req-2.json', json.dumps({"run_id": BOB_RUN, "files": ["stolen.txt"]}),
           P(m))
    assert store_state(store) == before
    last = check_status_entry(promote_status(m.mnt)[-1])
    assert (last["action"], last["run"], last["result"]) == ("promote", BOB_RUN, "EACCES")


def test_request_document_size_limit(store, mounter):
    store.add_session_output(ALICE_RUN, {"big-req.txt": b"ok"})
    m = mounter(store, ALICE, **noisy("req", ALICE_RUN))
    doc = json.dumps({"run_id": ALICE_RUN, "filename": "big-req.txt"}).encode()
    too_big = doc + b" " * (1024 * 1024 + 1 - len(doc))
    before = store_state(store)
    r = request(m, too_big, name="too-big.json")
    assert "EFBIG" in (r.get("write"), r.get("close")), r
    assert store_state(store) == before
    wait_until(lambda: "too-big.json" not in os.listdir(P(m)), what="request file gone")
    exact = doc + b" " * (1024 * 1024 - len(doc))
    assert request(m, exact, name="exact.json") == {"write": "ok", "close": "ok"}
    assert_promoted(store, m, ALICE_RUN, "big-req.txt", b"ok")


# ======================================================================== ownership

def test_a_run_only_bob_has_is_refused_to_alice(store, mounter):
    m = mounter(store, ALICE, **noisy(BOB_RUN))
    before = store_state(store)
    r = sh('mkdir "$1"', P(m, BOB_RUN))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    with pytest.raises(FileNotFoundError):
        os.stat(P(m, BOB_RUN))
    r = sh('echo x > "$1"/x.txt', P(m, BOB_RUN))
    assert r.returncode != 0
    assert store_state(store) == before
    assert BOB_RUN not in os.listdir(P(m))


def test_a_run_first_promoted_by_alice_is_refused_to_bob(store, mounter):
    alice = mounter(store, ALICE)
    os.mkdir(P(alice, NEW_RUN))
    promote(alice, NEW_RUN, "mine.txt", b"alice's")
    store.add_session_output(NEW_RUN, {"grab.txt": b"bob wants this"})
    bob = mounter(store, BOB, **noisy(NEW_RUN, "req"))
    before = store_state(store)
    r = sh('mkdir "$1"', P(bob, NEW_RUN))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert request(bob, {"run_id": NEW_RUN, "filename": "grab.txt"})["close"] == "EACCES"
    assert store_state(store) == before
    assert not store.run_dir(BOB, NEW_RUN).exists()
    assert NEW_RUN not in os.listdir(bob.mnt)


def test_two_tenants_racing_for_a_new_run(store, mounter, tmp_path):
    """Both may mkdir a run nobody owns yet; the first promotion claims it,
    and the other tenant's upload is then refused."""
    alice = mounter(store, ALICE, **noisy(NEW_RUN))
    bob = mounter(store, BOB)
    os.mkdir(P(alice, NEW_RUN))
    os.mkdir(P(bob, NEW_RUN))
    promote(bob, NEW_RUN, "bob-first.txt", b"bob was first")
    before = store_state(store)
    src = tmp_path / "late.txt"
    src.write_bytes(b"alice too late")
    r = sh('cp "$1" "$2"/', src, P(alice, NEW_RUN))
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert store_state(store) == before
    assert not store.run_dir(ALICE, NEW_RUN).exists()
    assert files_of(store.run_dir(BOB, NEW_RUN)) == {"bob-first.txt": b"bob was first"}


# ======================================================================== mount options

def test_run_option_restricts_promote_to_that_run(store, mounter):
    store.add_session_output(SHARED_RUN, {"s.txt": b"s"})
    m = mounter(store, ALICE, "-o", f"run={ALICE_RUN}", **noisy(SHARED_RUN, NEW_RUN, "req"))
    assert sorted(os.listdir(P(m))) == sorted([ALICE_RUN, ".status"])
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
    before = store_state(store)
    with pytest.raises(FileNotFoundError):
        os.stat(P(m, SHARED_RUN))
    for run in (NEW_RUN, SHARED_RUN):
        r = sh('mkdir "$1"', P(m, run))
        assert r.returncode != 0 and "Permission denied" in r.stderr, (run, r.stderr)
    assert request(m, {"run_id": SHARED_RUN, "filename": "s.txt"})["close"] == "EACCES"
    assert store_state(store) == before
    promote(m, ALICE_RUN, "allowed.txt", b"allowed")
    assert_promoted(store, m, ALICE_RUN, "allowed.txt", b"allowed")


def test_ro_option_has_no_promote_and_no_deletion(store, mounter):
    m = mounter(store, ALICE, "-o", "ro")
    runs = expected_runs(store, ALICE)
    assert sorted(os.listdir(m.mnt)) == runs
    assert os.stat(m.mnt).st_nlink == 2 + len(runs)
    with pytest.raises(FileNotFoundError):
        os.stat(m.mnt / "promote")
    before, view = store_state(store), walk_view(m.mnt)
    r = sh('rm "$1"', m.mnt / ALICE_RUN / "notes.txt")
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr
    r = sh('rm -r "$1"', m.mnt / ALICE_RUN)
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr
    r = sh('mkdir -p "$1"', m.mnt / "promote" / ALICE_RUN)
    assert r.returncode != 0 and "Read-only file system" in r.stderr, r.stderr
    assert store_state(store) == before and walk_view(m.mnt) == view


def test_nodelete_option_refuses_deletion_but_promotes(store, mounter):
    m = mounter(store, ALICE, "-o", "nodelete", **noisy(ALICE_RUN))
    before, view = store_state(store), walk_view(m.mnt, volatile=("promote/.status",))
    r = sh('rm "$1"', m.mnt / ALICE_RUN / "notes.txt")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    r = sh('rm -r "$1"', m.mnt / ALICE_RUN)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    assert store_state(store) == before
    assert walk_view(m.mnt, volatile=("promote/.status",)) == view
    promote(m, ALICE_RUN, "still.txt", b"promotion still works")
    assert_promoted(store, m, ALICE_RUN, "still.txt", b"promotion still works")


# ======================================================================== deletion

def test_rm_of_a_file_removes_file_entry_and_index_row(store, mounter):
    m = mounter(store, ALICE)
    run_dir = store.run_dir(ALICE, SHARED_RUN)
    old = read_metadata(run_dir)
    assert index_counts(store, ALICE, SHARED_RUN, "data.csv") == 1
    others = {n: d for n, d in files_of(run_dir).items() if n != "data.csv"}
    bob_before = store_state(store.run_dir(BOB, SHARED_RUN))
    r = sh('rm "$1"', m.mnt / SHARED_RUN / "data.csv")
    assert (r.returncode, r.stderr) == (0, "")
    assert "data.csv" not in os.listdir(m.mnt / SHARED_RUN)
    with pytest.raises(FileNotFoundError):
        os.stat(m.mnt / SHARED_RUN / "data.csv")
    assert not (run_dir / "data.csv").exists()
    assert files_of(run_dir) == others
    meta = read_metadata(run_dir)
    assert run_fields(meta) == run_fields(old)
    assert meta["artifacts"] == [a for a in old["artifacts"] if a["filename"] != "data.csv"]
    assert index_counts(store, ALICE, SHARED_RUN, "data.csv") == 0
    assert store_state(store.run_dir(BOB, SHARED_RUN)) == bob_before
    last = check_status_entry(promote_status(m.mnt)[-1])
    assert (last["action"], last["run"], last["file"], last["result"]) == \
        ("delete", SHARED_RUN, "data.csv", "ok")


def test_rm_r_of_a_run_removes_it_from_view_store_and_index(store, mounter):
    m = mounter(store, ALICE)
    bob_before = store_state(store.run_dir(BOB, SHARED_RUN))
    assert index_counts(store, ALICE, SHARED_RUN) == 1
    r = sh('rm -r "$1"', m.mnt / SHARED_RUN)
    assert (r.returncode, r.stderr) == (0, "")
    assert SHARED_RUN not in os.listdir(m.mnt)
    assert SHARED_RUN not in os.listdir(P(m))
    with pytest.raises(FileNotFoundError):
        os.stat(m.mnt / SHARED_RUN)
    assert not store.run_dir(ALICE, SHARED_RUN).exists()
    assert index_counts(store, ALICE, SHARED_RUN) == 0
    assert os.stat(m.mnt).st_nlink == 2 + len(expected_runs(store, ALICE)) + 1
    assert store_state(store.run_dir(BOB, SHARED_RUN)) == bob_before     # bob's run of that id
    assert ALICE_RUN in os.listdir(m.mnt)
    deletes = [e for e in promote_status(m.mnt) if e["action"] == "delete"]
    assert deletes and all(e["run"] == SHARED_RUN and e["result"] == "ok" for e in deletes)


def test_a_run_promoted_then_deleted_then_promoted_again(store, mounter):
    m = mounter(store, ALICE)
    os.mkdir(P(m, NEW_RUN))
    promote(m, NEW_RUN, "one.txt", b"1")
    assert sh('rm -r "$1"', m.mnt / NEW_RUN).returncode == 0
    assert not store.run_dir(ALICE, NEW_RUN).exists()
    assert NEW_RUN not in os.listdir(m.mnt)
    os.makedirs(P(m, NEW_RUN), exist_ok=True)           # may still be staged on this mount
    promote(m, NEW_RUN, "two.txt", b"2")
    meta, _ = assert_promoted(store, m, NEW_RUN, "two.txt", b"2")
    assert [a["filename"] for a in meta["artifacts"]] == ["two.txt"]


# ======================================================================== errnos from the shell

# (Names starting with '.' are temporaries: see test_promote_tools.py.)
BAD_NAMES = {
    "metadata_json": b"metadata.json",
    "control_char": b"a\x01b",
    "tab": b"tab\tname",
    "newline": b"new\nline",
    "delete_char": b"del\x7f",
    "c1_control": "nel\u0085x".encode(),
    "256_bytes": b"x" * 256,
    "invalid_utf8": b"\xff.txt",
    "overlong_slash": b"\xc0\xaf.txt",
    "surrogate": b"\xed\xa0\x80.txt",
    "above_u10ffff": b"\xf4\x90\x80\x80.txt",
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_bad_file_name_is_invalid_argument(store, mounter, tmp_path, case):
    name = BAD_NAMES[case]
    m = mounter(store, ALICE, **noisy(ALICE_RUN))
    before = store_state(store)
    allowed = {errno.EINVAL} | ({errno.ENAMETOOLONG} if case == "256_bytes" else set())
    with pytest.raises(OSError) as exc:
        os.open(os.fsencode(P(m, ALICE_RUN)) + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
    assert exc.value.errno in allowed, exc.value
    src = tmp_path / "src.txt"
    src.write_bytes(b"x")
    r = subprocess.run([b"cp", os.fsencode(src), os.fsencode(P(m, ALICE_RUN)) + b"/" + name],
                       capture_output=True, env={"LC_ALL": "C", "PATH": os.environ["PATH"]})
    assert r.returncode != 0
    assert re.search(rb"Invalid argument|File name too long", r.stderr), r.stderr
    assert store_state(store) == before
    assert os.listdir(P(m, ALICE_RUN)) == []


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127 + "x", "👍" * 63 + "abc", "a", "x..y",
                                  "-dash", "with space.txt", "x.metadata.json"])
def test_edge_file_names_are_accepted(store, mounter, name):
    assert len(name.encode()) <= 255
    m = mounter(store, ALICE)
    promote(m, ALICE_RUN, name, name.encode())
    assert_promoted(store, m, ALICE_RUN, name, name.encode())


@pytest.mark.parametrize("run", ["has space", "é-run", "x" * 129, "colon:run", "promote"])
def test_bad_run_name_is_invalid_argument(store, mounter, run):
    m = mounter(store, ALICE, **noisy(run))
    before = store_state(store)
    r = sh('mkdir "$1"', P(m, run))
    assert r.returncode != 0 and "Invalid argument" in r.stderr, r.stderr
    assert store_state(store) == before
    assert sorted(os.listdir(P(m))) == sorted(expected_runs(store, ALICE) + [".status"])


def test_mkdir_of_a_visible_run_is_file_exists(store, mounter):
    m = mounter(store, ALICE)
    before = store_state(store)
    r = sh('mkdir "$1"', P(m, ALICE_RUN))
    assert r.returncode != 0 and "File exists" in r.stderr, r.stderr
    assert store_state(store) == before


CAROL = "carol"
CAROL_RUN = "ca201000-0000-4000-8000-000000000001"


def carol_store(store):
    """carol: one run, one file of 1000 bytes (her quota usage)."""
    store.add_run(CAROL, CAROL_RUN, {"base.bin": rand(1000, "carol")})
    return store


def test_quota_bytes_disk_quota_exceeded(store, mounter, tmp_path):
    carol_store(store)
    m = mounter(store, CAROL, "-o", "quota_bytes=1600", **noisy(CAROL_RUN))
    fits, over = tmp_path / "fits.bin", tmp_path / "over.bin"
    fits.write_bytes(rand(600, 1))
    over.write_bytes(b"1")
    r = sh('cp "$1" "$2"/', fits, P(m, CAROL_RUN))
    assert (r.returncode, r.stderr) == (0, "")                   # exactly at the quota
    assert_promoted(store, m, CAROL_RUN, "fits.bin", fits.read_bytes(), client=CAROL)
    before = store_state(store)
    r = sh('cp "$1" "$2"/', over, P(m, CAROL_RUN))
    assert r.returncode != 0 and "Disk quota exceeded" in r.stderr, r.stderr
    assert store_state(store) == before
    wait_until(lambda: os.listdir(P(m, CAROL_RUN)) == [], what="the failed upload gone")
    last = check_status_entry(promote_status(m.mnt)[-1])
    assert (last["file"], last["result"]) == ("over.bin", "EDQUOT")
    said = [line for line in m.log_lines() if "over.bin" in line]
    assert said and all(CAROL_RUN in line and CAROL in line for line in said), m.stderr()


def test_quota_bytes_write_fails_at_once_and_close_fails_too(store, mounter):
    carol_store(store)
    m = mounter(store, CAROL, "-o", "quota_bytes=1600", **noisy(CAROL_RUN))
    before = store_state(store)
    fd = os.open(P(m, CAROL_RUN, "grow.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        assert os.write(fd, b"a" * 500) == 500
        with pytest.raises(OSError) as exc:
            os.write(fd, b"b" * 200)
        assert exc.value.errno == errno.EDQUOT
    finally:
        with pytest.raises(OSError) as exc:
            os.close(fd)
        assert exc.value.errno == errno.EDQUOT
    assert store_state(store) == before
    # uploads in flight count: two at once, each under the quota alone
    a = os.open(P(m, CAROL_RUN, "a.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    b = os.open(P(m, CAROL_RUN, "b.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    assert os.write(a, b"a" * 400) == 400
    with pytest.raises(OSError) as exc:
        os.write(b, b"b" * 400)
    assert exc.value.errno == errno.EDQUOT
    with pytest.raises(OSError) as exc:
        os.close(b)
    assert exc.value.errno == errno.EDQUOT
    os.close(a)
    assert_promoted(store, m, CAROL_RUN, "a.bin", b"a" * 400, client=CAROL)
    assert not (store.run_dir(CAROL, CAROL_RUN) / "b.bin").exists()


def test_quota_bytes_counts_the_apparent_size(store, mounter):
    """ftruncate to 1 TB counts 1 TB: the ftruncate, or at the latest the
    next write, fails with EDQUOT, and so does close()."""
    carol_store(store)
    m = mounter(store, CAROL, "-o", f"quota_bytes={10**9}", **noisy(CAROL_RUN))
    before = store_state(store)
    fd = os.open(P(m, CAROL_RUN, "huge.img"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    failed = None
    try:
        os.ftruncate(fd, 1 << 40)
        os.write(fd, b"x")
    except OSError as e:
        failed = e
    close_err = None
    try:
        os.close(fd)
    except OSError as e:
        close_err = e
    assert failed is not None and failed.errno == errno.EDQUOT, failed
    assert close_err is not None and close_err.errno == errno.EDQUOT, close_err
    assert store_state(store) == before
    r = sh('dd if=/dev/zero of="$1" bs=1 count=1 seek=2000000000 conv=notrunc status=none',
           P(m, CAROL_RUN, "seek.img"))
    assert r.returncode != 0 and "Disk quota exceeded" in r.stderr, r.stderr
    assert store_state(store) == before


def test_quota_files(store, mounter, tmp_path):
    carol_store(store)
    m = mounter(store, CAROL, "-o", "quota_files=2", **noisy(CAROL_RUN))
    src = tmp_path / "f.txt"
    src.write_bytes(b"f")
    r = sh('cp "$1" "$2"/one.txt', src, P(m, CAROL_RUN))
    assert (r.returncode, r.stderr) == (0, "")
    assert_promoted(store, m, CAROL_RUN, "one.txt", b"f", client=CAROL)
    before = store_state(store)
    r = sh('cp "$1" "$2"/two.txt', src, P(m, CAROL_RUN))
    assert r.returncode != 0 and "Disk quota exceeded" in r.stderr, r.stderr
    with pytest.raises(OSError) as exc:
        os.open(P(m, CAROL_RUN, "three.txt"), os.O_WRONLY | os.O_CREAT, 0o644)
    assert exc.value.errno == errno.EDQUOT
    assert store_state(store) == before


HOLDER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, sys.argv[2].encode())
print("open", flush=True)
sys.stdin.readline()
os.write(fd, sys.argv[3].encode())
os.close(fd)
print("closed", flush=True)
"""


def test_second_writer_of_the_same_name_is_busy(store, mounter, tmp_path):
    """The first writer is a child process: an upload's descriptor held by
    this process would be closed (flushed, so committed) by every exec of
    the shell commands below."""
    m = mounter(store, ALICE, **noisy(ALICE_RUN, "shared.txt"))
    path = P(m, ALICE_RUN, "shared.txt")
    head, tail = "first writer " * 400, "and its end " * 400
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), head, tail],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "open\n"
        before = store_state(store)
        src = tmp_path / "second.txt"
        src.write_bytes(b"second writer")
        r = sh('echo second > "$1"', path)
        assert r.returncode != 0 and "Device or resource busy" in r.stderr, r.stderr
        r = sh('cp "$1" "$2"', src, path)
        assert r.returncode != 0 and "Device or resource busy" in r.stderr, r.stderr
        for flags in (os.O_WRONLY, os.O_RDWR | os.O_TRUNC, os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                      os.O_WRONLY | os.O_APPEND):
            with pytest.raises(OSError) as exc:
                os.open(path, flags, 0o644)
            assert exc.value.errno in ((errno.EBUSY, errno.EEXIST) if flags & os.O_EXCL
                                       else (errno.EBUSY,)), (flags, exc.value)
        assert read_bytes(path) == head.encode()        # a reader is fine, and nothing truncated
        assert store_state(store) == before
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.stdout.readline() == "closed\n"
    finally:
        holder.stdin.close()
        assert holder.wait(30) == 0
    assert_promoted(store, m, ALICE_RUN, "shared.txt", (head + tail).encode())


WRITER = r"""
import hashlib, os, random, sys
d, wid, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    name = f"w{wid}-{i:03d}.bin"
    data = random.Random(name).randbytes(random.Random(name + "s").randrange(0, 20000))
    fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    print(name, hashlib.sha256(data).hexdigest(), len(data), flush=True)
"""


def test_eight_writers_fifty_files_each_lose_no_entry(store, mounter):
    m = mounter(store, ALICE)
    os.mkdir(P(m, NEW_RUN))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(P(m, NEW_RUN)), str(w), "50"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(8)]
    done = {}
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        for line in out.splitlines():
            name, digest, size = line.split()
            done[name] = (digest, int(size))
    assert len(done) == 400
    run_dir = store.run_dir(ALICE, NEW_RUN)
    meta = read_metadata(run_dir)
    entries = entries_by_name(meta)
    assert len(meta["artifacts"]) == 400 and set(entries) == set(done)
    assert set(expected_files(run_dir)) == set(done) | {"metadata.json"}
    assert sorted(os.listdir(m.mnt / NEW_RUN)) == sorted(set(done) | {"metadata.json"})
    for name, (digest, size) in done.items():
        assert entries[name]["size_bytes"] == size, name
        assert hashlib.sha256(read_bytes(run_dir / name)).hexdigest() == digest, name
        assert os.getxattr(m.mnt / NEW_RUN / name, "user.artifact.sha256") == digest.encode()


def test_metadata_json_is_never_seen_half_written(store, mounter):
    """Readers of metadata.json (in the store and through the view) during
    100 promotions only ever see a complete, valid document."""
    m = mounter(store, ALICE)
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    stop, seen, errors = threading.Event(), [0], []

    def reader(path):
        while not stop.is_set():
            try:
                raw = read_bytes(path)
            except FileNotFoundError:
                errors.append(f"{path} missing for a moment")
                continue
            try:
                validate_metadata(raw, ALICE_RUN)
                seen[0] += 1
            except Exception as e:  # reported below
                errors.append(f"{path}: {e!r}: {raw[-100:]!r}")

    threads = [threading.Thread(target=reader, args=(p,))
               for p in (run_dir / "metadata.json", m.mnt / ALICE_RUN / "metadata.json")]
    for t in threads:
        t.start()
    try:
        for i in range(100):
            promote(m, ALICE_RUN, f"many-{i:03d}.txt", b"x" * i)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == [], errors[:5]
    assert seen[0] > 0
    assert len(read_metadata(run_dir)["artifacts"]) == 101


def test_store_error_is_eio_and_changes_nothing(store, mounter, tmp_path):
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    m = mounter(store, ALICE, **noisy(ALICE_RUN))
    src = tmp_path / "eio.txt"
    src.write_bytes(b"cannot land")
    r = subprocess.run(["chattr", "+i", str(run_dir)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not supported here: {r.stderr}")
    try:
        before = store_state(store)
        r = sh('cp "$1" "$2"/', src, P(m, ALICE_RUN))
        assert r.returncode != 0 and "Input/output error" in r.stderr, r.stderr
        assert store_state(store) == before
    finally:
        subprocess.run(["chattr", "-i", str(run_dir)], check=True)
    last = check_status_entry(promote_status(m.mnt)[-1])
    assert (last["file"], last["result"]) == ("eio.txt", "EIO")


# ======================================================================== .status

def test_status_records_every_outcome_newest_last(store, mounter):
    store.add_session_output(BOB_RUN, {"b.txt": b"b"})
    m = mounter(store, ALICE, **noisy(BOB_RUN, "bad.json", "req", ALICE_RUN))
    assert promote_status(m.mnt) == []
    promote(m, ALICE_RUN, "ok.txt", b"ok")
    assert request(m, b"{broken", name="bad.json")["close"] == "EINVAL"
    assert request(m, {"run_id": BOB_RUN, "filename": "b.txt"})["close"] == "EACCES"
    assert sh('rm "$1"', m.mnt / ALICE_RUN / "ok.txt").returncode == 0
    entries = [check_status_entry(e) for e in promote_status(m.mnt)]
    got = [(e["action"], e["run"], e["file"], e["result"]) for e in entries]
    assert got[0] == ("promote", ALICE_RUN, "ok.txt", "ok")
    assert got[1][0] == "promote" and got[1][3] == "EINVAL"
    assert got[2] == ("promote", BOB_RUN, "b.txt", "EACCES")
    assert got[3] == ("delete", ALICE_RUN, "ok.txt", "ok")
    assert len(got) == 4
    times = [datetime.fromisoformat(e["time"].replace("Z", "+00:00")) for e in entries]
    assert times == sorted(times)
    assert all(abs((t - datetime.now(timezone.utc)).total_seconds()) < 60 for t in times)


def test_status_entries_have_exactly_the_documented_fields(store, mounter):
    """docs/promote.md: the six fields always, sha256 and size when known
    (a promotion that landed), nothing else."""
    store.add_session_output(BOB_RUN, {"b.txt": b"b"})
    m = mounter(store, ALICE, **noisy(BOB_RUN, "req"))
    promote(m, ALICE_RUN, "ok.txt", b"ok")
    assert request(m, {"run_id": BOB_RUN, "filename": "b.txt"})["close"] == "EACCES"
    assert sh('rm "$1"', m.mnt / ALICE_RUN / "ok.txt").returncode == 0
    entries = [check_status_entry(e) for e in promote_status(m.mnt)]
    assert len(entries) == 3
    promoted, refused, deleted = entries
    assert set(promoted) == STATUS_KEYS | {"sha256", "size"}, promoted
    assert promoted["sha256"] == hashlib.sha256(b"ok").hexdigest() and promoted["size"] == 2
    assert set(refused) == STATUS_KEYS, refused
    assert set(deleted) == STATUS_KEYS, deleted


def test_status_is_scoped_to_the_tenant(store, mounter):
    store.add_session_output(BOB_RUN, {"x.txt": b"x"})
    store.add_session_output(ALICE_RUN, {"y.txt": b"y"})
    alice = mounter(store, ALICE, **noisy(BOB_RUN, "req"))
    bob = mounter(store, BOB, **noisy(ALICE_RUN, "req"))
    promote(alice, ALICE_RUN, "alice-only-file.txt", b"a")
    promote(bob, BOB_RUN, "bob-only-file.txt", b"b")
    assert request(alice, {"run_id": BOB_RUN, "filename": "x.txt"})["close"] == "EACCES"
    assert request(bob, {"run_id": ALICE_RUN, "filename": "y.txt"})["close"] == "EACCES"
    a_raw = read_bytes(P(alice, ".status"))
    b_raw = read_bytes(P(bob, ".status"))
    assert b"alice-only-file.txt" in a_raw and b"bob-only-file.txt" not in a_raw
    assert b"bob-only-file.txt" in b_raw and b"alice-only-file.txt" not in b_raw
    assert b"y.txt" not in a_raw and b"x.txt" not in b_raw
    assert len(promote_status(alice.mnt)) == 2 and len(promote_status(bob.mnt)) == 2


def test_status_cannot_be_written(store, mounter):
    m = mounter(store, ALICE, **noisy(".status"))
    promote(m, ALICE_RUN, "x.txt", b"x")
    before, status = store_state(store), read_bytes(P(m, ".status"))
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
        with pytest.raises(OSError) as exc:
            os.open(P(m, ".status"), flags)
        assert exc.value.errno in (errno.EACCES, errno.EROFS), (flags, exc.value)
    r = sh('echo forged > "$1"', P(m, ".status"))
    assert r.returncode != 0
    for op in (lambda p: os.truncate(p, 0), os.unlink, lambda p: os.chmod(p, 0o666),
               lambda p: os.rename(p, p.with_name("moved"))):
        with pytest.raises(OSError) as exc:
            op(P(m, ".status"))
        assert exc.value.errno in (errno.EACCES, errno.EROFS, errno.EPERM), exc.value
    assert read_bytes(P(m, ".status")) == status
    assert store_state(store) == before


@pytest.mark.daemon_timeout(300)
def test_status_keeps_the_last_1000_entries(store, mounter):
    names = [f"s{i:04d}.txt" for i in range(1001)]
    store.add_session_output(NEW_RUN, {n: n.encode() for n in names})
    m = mounter(store, ALICE)
    assert write_close(P(m, "many.json"), json.dumps({"run_id": NEW_RUN, "files": names}).encode(),
                       timeout=240)["close"] == "ok"
    entries = promote_status(m.mnt)
    assert len(entries) == 1000
    files = [e["file"] for e in entries]
    assert files[-1] == "s1000.txt" and "s0000.txt" not in files
    seq = [int(f[1:5]) for f in files if f and f.startswith("s")]
    assert seq == list(range(seq[0], 1001))
    assert len(read_metadata(store.run_dir(ALICE, NEW_RUN))["artifacts"]) == 1001


# ======================================================================== staging

def test_staging_is_empty_after_a_clean_unmount(store, mounter):
    carol_store(store)
    m = mounter(store, CAROL, "-o", "quota_bytes=5000", **noisy(CAROL_RUN))
    promote(m, CAROL_RUN, "kept.txt", b"kept")
    fd = os.open(P(m, CAROL_RUN, "refused.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"r" * 3000)
    with pytest.raises(OSError):
        os.write(fd, b"r" * 3000)
    with pytest.raises(OSError):
        os.close(fd)
    with open(P(m, CAROL_RUN, ".left.tmp"), "wb") as f:    # a temporary, never renamed
        f.write(b"t")
    m.unmount()
    assert staging_files(store, CAROL) == []
    assert files_of(store.run_dir(CAROL, CAROL_RUN)).keys() == {"base.bin", "kept.txt"}
