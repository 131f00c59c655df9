"""A store that is huge or hostile in shape.

The daemon must keep serving whatever the store holds, in bounded memory:
a metadata.json of 100 MB (not parsed past 16 MiB: the run is served
without its metadata, with one warning), a metadata.json nested beyond any
parser's depth, and a run directory with a million entries.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from conftest import (ALICE, ALICE_RUN, REFUSALS, SHARED_RUN, Store, StoreGuard, errno_of,
                      integration, outcome, py_child, read_bytes, rss_limit_kb, upload, vmrss_kb)

MIB = 1 << 20


def vm_hwm_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_100mb_metadata_json(world, mounter):
    """A 100 MB metadata.json (valid JSON: the document padded with
    whitespace): the daemon mounts with exactly one warning naming the run,
    lists the run and serves its files byte for byte, never reads the
    100 MB into memory, and a promotion into the run is refused (EIO: its
    metadata cannot be kept valid) without touching it."""
    run_dir = world.root / "artifacts" / ALICE / SHARED_RUN
    meta = run_dir / "metadata.json"
    with open(meta, "r+b") as f:
        f.seek(0, os.SEEK_END)
        f.write(b" " * (100 * MIB))
    m = mounter(world, ALICE, expect_warnings=[r"metadata\.json is larger than", *REFUSALS])
    guard = StoreGuard(world)
    assert SHARED_RUN in os.listdir(m.mnt)
    assert set(os.listdir(m.mnt / SHARED_RUN)) == set(os.listdir(run_dir))
    assert read_bytes(m.mnt / SHARED_RUN / "big.bin") == read_bytes(run_dir / "big.bin")
    assert os.stat(m.mnt / SHARED_RUN / "metadata.json").st_size > 100 * MIB
    warnings = [line for line in m.log_lines("warning") if "larger than" in line]
    assert len(warnings) == 1 and SHARED_RUN in warnings[0], m.log_lines("warning")
    assert vm_hwm_kb(m.proc.pid) < rss_limit_kb(), f"VmHWM {vm_hwm_kb(m.proc.pid)} kB"
    steps = upload(m.mnt, SHARED_RUN, "x.txt", b"x")
    assert outcome(steps) == "EIO", steps
    assert vm_hwm_kb(m.proc.pid) < rss_limit_kb(), f"VmHWM {vm_hwm_kb(m.proc.pid)} kB"
    guard.check()


def test_deeply_nested_metadata_json(world, mounter):
    """metadata.json is 15 MiB of '[' (nesting far beyond the parser's
    bound): one warning, the run is listed and served, the daemon's stack
    and memory hold."""
    run_dir = world.root / "artifacts" / ALICE / ALICE_RUN
    (run_dir / "metadata.json").write_bytes(b"[" * (15 * MIB))
    m = mounter(world, ALICE, expect_warnings=[r"metadata\.json does not parse"])
    guard = StoreGuard(world)
    assert sorted(os.listdir(m.mnt / ALICE_RUN)) == ["metadata.json", "notes.txt"]
    assert read_bytes(m.mnt / ALICE_RUN / "notes.txt").startswith(b"alice notes")
    assert os.listxattr(m.mnt / ALICE_RUN) == []
    assert len(m.log_lines("warning")) == 1
    assert vm_hwm_kb(m.proc.pid) < rss_limit_kb()
    guard.check()


# A million files (made on a tmpfs: 1,000,000 creations take about 15 s
# there, against about 47 s on this machine's ext4, and the tree goes away
# with one umount).
MANY = int(os.environ.get("ARTIFACTFS_MANY_FILES", "1000000"))


@pytest.mark.daemon_timeout(300)
def test_run_dir_with_a_million_entries(tmpfs_dir, mounter, c_helpers, monkeypatch):
    """A run dir holding 1,000,000 files: the daemon mounts (indexing them
    all), lists every entry through the mount, serves any one of them, and
    keeps serving the other runs at once -- in bounded memory (VmHWM under
    256 MB, plus ASan's overhead in a sanitizer build), with the store
    unchanged.  (ARTIFACTFS_MANY_FILES sets another count.)"""
    store = Store(tmpfs_dir / "store")
    store.add_run(ALICE, "small-run", {"a.txt": b"small"})
    big = store.add_run(ALICE, "big-run", {}, metadata=None)
    subprocess.run([str(c_helpers / "mkfiles"), str(big.path), str(MANY)], check=True,
                   timeout=240)
    guard = StoreGuard(store, compact=True)
    # Indexing a million files takes longer than the usual readiness wait.
    monkeypatch.setattr(integration, "READY_TIMEOUT", 240.0)
    m = mounter(store, ALICE)
    pid = m.proc.pid
    start = time.monotonic()
    count = py_child("n = 0\nfor e in os.scandir(sys.argv[1]): n += 1\nprint(n)",
                     m.mnt / "big-run", timeout=180)
    listing = time.monotonic() - start
    assert int(count) == MANY, count
    last = f"f{MANY - 1:07d}"
    assert os.stat(m.mnt / "big-run" / last).st_size == 0
    assert read_bytes(m.mnt / "big-run" / last) == b""
    assert errno_of(os.stat, m.mnt / "big-run" / f"f{MANY:07d}") == "ENOENT"
    out = py_child("print(open(sys.argv[1], 'rb').read().decode())", m.mnt / "small-run" / "a.txt",
                   timeout=5)
    assert out == "small"
    hwm = vm_hwm_kb(pid)
    assert hwm < rss_limit_kb(), f"VmHWM {hwm} kB after listing {MANY} entries ({listing:.0f} s)"
    assert vmrss_kb(pid) < rss_limit_kb()
    guard.check()
