"""Promotion through FUSE passthrough: the kernel writes an upload itself.

Where passthrough is in use and the tenant has no byte quota, the open of
a direct upload hands the kernel its staged file, and no WRITE reaches
the daemon (counted with the kernel's fuse:fuse_request_send tracepoint,
tools/fusetrace.py).  What promote/ promises stays true: the file is
durable and in metadata.json with the SHA-256 of its bytes when close()
returns, nothing is left in staging, a shell's redirection lands the
output and not the empty file of its first close.  What changes, and is
checked here: a descriptor kept open after a close (dup, fork, mmap)
writes the artifact in place, and its own close (or the release) lands
it again; a newer upload of the name by another process waits for the
older one's release, and is refused while the older one is held open.
Requests, temporaries and a byte quota keep every write in the daemon.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import subprocess
import sys
import time

import pytest

from conftest import (ALICE, REPO_ROOT, XATTR_PREFIX, daemon_stats, entries_by_name,
                      read_bytes, read_metadata, sh, staging_files, wait_until, write_close,
                      write_through, xattrs)

sys.path.insert(0, str(REPO_ROOT / "tools"))
from fusetrace import FuseRequests  # noqa: E402  (tools/fusetrace.py)

RUN = "9a55e11c-5e55-4a0b-9c1d-2f3e4a5b6c7d"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def mount(store, mounter):
    """alice's mount, with passthrough in use (skips a daemon built without
    it, or told not to use it), and promote/RUN made."""
    # The refusals two tests ask for are logged.
    m = mounter(store, ALICE, expect_warnings=[r"file a\.txt$", r"file gone\.txt$"])
    if not daemon_stats(m.mnt)["passthrough"]:
        pytest.skip("passthrough is not in use")
    (m.mnt / "promote" / RUN).mkdir()
    return m


def assert_landed(store, m, name: str, data: bytes) -> None:
    """name holds data in the store and the view, with one metadata entry
    and a SHA-256 that match it, and nothing of it is left in staging."""
    run_dir = store.run_dir(ALICE, RUN)
    assert read_bytes(run_dir / name) == data
    entry = entries_by_name(read_metadata(run_dir))[name]
    assert entry["size_bytes"] == len(data)
    view = m.mnt / RUN / name
    assert xattrs(view)[XATTR_PREFIX + "sha256"] == sha(data).encode()
    assert read_bytes(view) == data
    assert staging_files(store, ALICE) == []


def land_keeping_a_descriptor(path, data: bytes) -> int:
    """Writes data to a new upload and closes it (it lands) while a dup()'d
    descriptor stays open; returns that descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    kept = os.dup(fd)
    os.close(fd)
    return kept


def test_a_copy_reaches_the_daemon_without_a_write(store, mount, tmp_path):
    data = os.urandom(16 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    trace = FuseRequests(mount.mnt)
    try:
        subprocess.run(["cp", src, mount.mnt / "promote" / RUN / "big.bin"], check=True)
        counts = trace.counts()
    finally:
        trace.close()
    assert counts.get("WRITE", 0) == 0, counts
    # KILLPRIV_V2: the kernel asks about set-id bits once per inode, not per write.
    assert counts.get("GETXATTR", 0) <= 1, counts
    assert counts.get("FLUSH", 0) >= 1, counts
    assert_landed(store, mount, "big.bin", data)


@pytest.mark.parametrize("option", ["passthrough=off", "quota_bytes=100000000"])
def test_every_write_reaches_the_daemon_without_passthrough_or_with_a_byte_quota(
        store, mounter, option):
    m = mounter(store, ALICE, "-o", option)
    (m.mnt / "promote" / RUN).mkdir()
    data = os.urandom(1 << 20)
    trace = FuseRequests(m.mnt)
    try:
        write_through(m.mnt / "promote" / RUN / "a.bin", data)
        counts = trace.counts()
    finally:
        trace.close()
    assert counts.get("WRITE", 0) >= 1, counts
    assert_landed(store, m, "a.bin", data)


def test_temporaries_and_requests_are_written_through_the_daemon(store, mount):
    trace = FuseRequests(mount.mnt)
    try:
        write_through(mount.mnt / "promote" / RUN / ".out.tmp", b"temporary\n")
        os.rename(mount.mnt / "promote" / RUN / ".out.tmp", mount.mnt / "promote" / RUN / "out")
        counts = trace.counts()
    finally:
        trace.close()
    assert counts.get("WRITE", 0) == 1, counts
    assert_landed(store, mount, "out", b"temporary\n")


def test_a_descriptor_kept_after_a_close_lands_what_it_writes_at_its_own_close(store, mount):
    path = mount.mnt / "promote" / RUN / "log.txt"
    kept = land_keeping_a_descriptor(path, b"one\n")
    assert_landed(store, mount, "log.txt", b"one\n")
    os.write(kept, b"two\n")
    os.close(kept)
    assert_landed(store, mount, "log.txt", b"one\ntwo\n")


def test_a_close_with_nothing_written_since_lands_nothing_again(store, mount):
    path = mount.mnt / "promote" / RUN / "same.txt"
    kept = land_keeping_a_descriptor(path, b"same\n")
    before = entries_by_name(read_metadata(store.run_dir(ALICE, RUN)))["same.txt"]
    time.sleep(0.01)
    os.close(kept)
    after = entries_by_name(read_metadata(store.run_dir(ALICE, RUN)))["same.txt"]
    assert after["generated_at"] == before["generated_at"]


def test_a_shell_redirection_lands_the_output_not_its_first_close(store, mount):
    # The shell opens, dup2()s onto stdout and closes the first descriptor
    # before the command writes a byte: that close sees nothing written.
    r = sh('printf "hello\\n" > "$1"; (echo a; sleep 0.05; echo b) > "$2"',
           mount.mnt / "promote" / RUN / "hello.txt", mount.mnt / "promote" / RUN / "ab.txt")
    assert r.returncode == 0, r.stderr
    assert_landed(store, mount, "hello.txt", b"hello\n")
    assert_landed(store, mount, "ab.txt", b"a\nb\n")


def test_writes_through_a_mapping_land_at_the_release(store, mount):
    path = mount.mnt / "promote" / RUN / "mapped.bin"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, 1 << 16)
    mapping = mmap.mmap(fd, 1 << 16)
    mapping[:5] = b"hello"
    os.close(fd)
    first = bytearray(1 << 16)
    first[:5] = b"hello"
    assert_landed(store, mount, "mapped.bin", bytes(first))
    mapping[5:10] = b"world"
    mapping.close()                       # the release: it lands again
    first[5:10] = b"world"
    run_dir = store.run_dir(ALICE, RUN)
    wait_until(lambda: xattrs(mount.mnt / RUN / "mapped.bin")[XATTR_PREFIX + "sha256"] ==
               sha(bytes(first)).encode(), what="the release's commit")
    assert read_bytes(run_dir / "mapped.bin") == bytes(first)
    assert staging_files(store, ALICE) == []


def test_a_newer_upload_waits_for_the_release_and_is_refused_while_held(store, mount):
    path = mount.mnt / "promote" / RUN / "a.txt"
    kept = land_keeping_a_descriptor(path, b"old\n")
    # Another process: refused while the old descriptor is open (its next
    # write would go into the artifact unseen), after a wait for a release.
    t0 = time.monotonic()
    assert write_close(path, b"newer\n") == {"open": "EBUSY"}
    assert time.monotonic() - t0 >= 0.9
    assert_landed(store, mount, "a.txt", b"old\n")
    os.write(kept, b"more\n")
    os.close(kept)
    assert_landed(store, mount, "a.txt", b"old\nmore\n")
    # Released: the name is free again, for uploads one after another.
    for i in range(20):
        assert write_close(path, b"round %d\n" % i)["close"] == "ok"
    assert_landed(store, mount, "a.txt", b"round 19\n")


def test_an_upload_being_written_reads_back_what_was_written(store, mount):
    path = mount.mnt / "promote" / RUN / "r.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"so far\n")
        assert read_bytes(path) == b"so far\n"
        os.write(fd, b"and on\n")
        assert read_bytes(path) == b"so far\nand on\n"
    finally:
        os.close(fd)
    assert_landed(store, mount, "r.txt", b"so far\nand on\n")


def test_an_artifact_removed_while_a_kept_descriptor_writes_fails_that_close(store, mount):
    path = mount.mnt / "promote" / RUN / "gone.txt"
    kept = land_keeping_a_descriptor(path, b"landed\n")
    os.unlink(store.run_dir(ALICE, RUN) / "gone.txt")     # the kernel-server, say
    os.write(kept, b"into nothing\n")
    with pytest.raises(OSError):
        os.close(kept)
    assert any("gone.txt" in line and "removed from the store" in line
               for line in mount.log_lines("warning"))
