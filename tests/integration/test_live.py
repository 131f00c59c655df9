"""Changes made in the store behind the daemon's back show in the mount
within a second (polled for up to LIVE_TIMEOUT), without remounting.

Tests that create runs or rewrite metadata.json accept warnings: like the
kernel-server, they write metadata.json in place, so the daemon may catch
it missing or half written for a moment and say so."""

import copy
import os
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (
    ALICE, ALICE_RUN, BOB, SHARED_RUN, File, read_bytes, rfc3339,
    serde_pretty, wait_until, write_file,
)


def listing(path):
    return sorted(os.listdir(path))


def test_new_run_appears(store, mounter):
    m = mounter(store, ALICE, allow_warnings=True)
    assert not os.path.exists(m.mnt / "new-run")             # cache the negative lookup
    run = store.add_run(ALICE, "new-run", {"fresh.txt": b"fresh bytes"}, workflow_id="wf-new")
    wait_until(lambda: "new-run" in os.listdir(m.mnt), what="new run listed")
    assert listing(m.mnt / "new-run") == ["fresh.txt", "metadata.json"]
    assert read_bytes(m.mnt / "new-run" / "fresh.txt") == b"fresh bytes"
    assert os.stat(m.mnt / "new-run").st_ino == store.shown_ino(run.path)
    wait_until(lambda: os.getxattr(m.mnt / "new-run", "user.artifact.workflow_id") == b"wf-new",
               what="new run's xattrs")
    wait_until(lambda: os.stat(m.mnt).st_nlink == 2 + 3 + 1, what="root nlink counts the new run")


def test_new_file_appears(store, mounter):
    m = mounter(store, ALICE)
    target = m.mnt / ALICE_RUN / "late.txt"
    assert not os.path.exists(target)                         # cache the negative lookup
    listing(m.mnt / ALICE_RUN)                                # and the directory listing
    (store.run_dir(ALICE, ALICE_RUN) / "late.txt").write_bytes(b"late bytes")
    wait_until(lambda: "late.txt" in os.listdir(m.mnt / ALICE_RUN), what="new file listed")
    wait_until(lambda: os.path.exists(target), what="new file found by lookup")
    assert read_bytes(target) == b"late bytes"


@pytest.mark.parametrize("change", ["grow", "shrink", "same_size"])
@pytest.mark.parametrize("reader", ["cold", "read_before", "fd_open_across"])
def test_file_rewritten_in_place_gives_new_size_and_bytes(store, mounter, change, reader):
    backing = store.run_dir(ALICE, SHARED_RUN) / "report.md"
    old = read_bytes(backing)
    new = {"grow": b"rewritten, much longer content " * 5000, "shrink": b"short",
           "same_size": bytes(reversed(old)).upper()}[change]
    assert new != old and (len(new) == len(old)) == (change == "same_size")
    ino = os.stat(backing).st_ino
    m = mounter(store, ALICE)
    view = m.mnt / SHARED_RUN / "report.md"
    fd = None
    if reader != "cold":
        assert read_bytes(view) == old and os.stat(view).st_size == len(old)
    if reader == "fd_open_across":
        fd = os.open(view, os.O_RDONLY)
        assert os.pread(fd, len(old) + 10, 0) == old
    try:
        write_file(backing, File(new))                         # in place: same inode
        assert os.stat(backing).st_ino == ino
        mtime = os.stat(backing).st_mtime_ns
        wait_until(lambda: os.stat(view).st_mtime_ns == mtime, what="new mtime")
        assert os.stat(view).st_size == len(new)
        assert read_bytes(view) == new, "stale bytes although size and mtime are already new"
        if fd is not None:
            assert os.pread(fd, len(new) + 10, 0) == new, "stale bytes through an open fd"
    finally:
        if fd is not None:
            os.close(fd)
    assert os.stat(view).st_ino == store.shown_ino(backing)


def test_file_replaced_by_rename_gives_new_inode_and_bytes(store, mounter):
    run_dir = store.run_dir(ALICE, SHARED_RUN)
    m = mounter(store, ALICE)
    view = m.mnt / SHARED_RUN / "data.csv"
    read_bytes(view)
    (run_dir / ".data.csv.tmp").write_bytes(b"replaced,by,rename\n")
    os.rename(run_dir / ".data.csv.tmp", run_dir / "data.csv")
    new_ino = store.shown_ino(run_dir / "data.csv")
    wait_until(lambda: os.stat(view).st_ino == new_ino, what="new inode")
    assert read_bytes(view) == b"replaced,by,rename\n"


def test_file_removed_disappears(store, mounter):
    m = mounter(store, ALICE)
    view = m.mnt / SHARED_RUN / "data.csv"
    read_bytes(view)
    os.unlink(store.run_dir(ALICE, SHARED_RUN) / "data.csv")
    wait_until(lambda: "data.csv" not in os.listdir(m.mnt / SHARED_RUN), what="file unlisted")
    wait_until(lambda: not os.path.exists(view), what="file lookup fails")


def test_run_removed_disappears(store, mounter):
    m = mounter(store, ALICE)
    listing(m.mnt / ALICE_RUN)
    shutil.rmtree(store.run_dir(ALICE, ALICE_RUN))
    wait_until(lambda: ALICE_RUN not in os.listdir(m.mnt), what="run unlisted")
    wait_until(lambda: not os.path.exists(m.mnt / ALICE_RUN), what="run lookup fails")
    wait_until(lambda: os.stat(m.mnt).st_nlink == 2 + 1 + 1, what="root nlink without the run")


def test_metadata_rewritten_updates_xattrs_and_bytes(store, mounter):
    """A promotion as the kernel-server does it: copy a file in, then rewrite
    metadata.json in place with one more entry and changed fields."""
    run = store.run(ALICE, SHARED_RUN)
    m = mounter(store, ALICE, allow_warnings=True)
    assert os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id") == b"wf-alice-shared"
    (run.path / "promoted.json").write_bytes(b'{"k": 1}')
    meta = copy.deepcopy(run.meta)
    meta["workflow_id"] = "wf-alice-changed"
    meta["user_directive"] = "a new directive"
    meta["artifacts"][0]["agent_id"] = "alice-agent-rewritten"
    meta["artifacts"].append({"filename": "promoted.json", "agent_id": "alice-agent-late",
                              "generated_at": rfc3339(datetime.now(timezone.utc)),
                              "size_bytes": 8, "content_type": "application/json"})
    store.write_metadata(run, meta)
    first = meta["artifacts"][0]["filename"]
    wait_until(lambda: os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id")
               == b"wf-alice-changed", what="run xattr updated")
    assert os.getxattr(m.mnt / SHARED_RUN, "user.artifact.user_directive") == b"a new directive"
    wait_until(lambda: os.getxattr(m.mnt / SHARED_RUN / first, "user.artifact.agent_id")
               == b"alice-agent-rewritten", what="file xattr updated")
    wait_until(lambda: os.getxattr(m.mnt / SHARED_RUN / "promoted.json", "user.artifact.agent_id")
               == b"alice-agent-late", what="promoted file's xattrs")
    assert read_bytes(m.mnt / SHARED_RUN / "promoted.json") == b'{"k": 1}'
    assert read_bytes(m.mnt / SHARED_RUN / "metadata.json") == serde_pretty(meta)


def test_kernel_server_adding_files_one_by_one_is_indexed_to_the_last(store, mounter):
    """The kernel-server adds 150 files to a run one at a time, rewriting
    metadata.json after each, never pausing: the daemon re-indexes a run
    once per burst (when it goes quiet, or every half second while it does
    not), and at the end every file shows its attributes and none is
    missed -- the last ones included, after the writer stops."""
    run = store.run(ALICE, SHARED_RUN)
    m = mounter(store, ALICE, allow_warnings=True)
    meta = copy.deepcopy(run.meta)
    for i in range(150):
        name = f"burst-{i:03d}.txt"
        (run.path / name).write_bytes(b"x" * i)
        meta["artifacts"].append({"filename": name, "agent_id": f"agent-{i}",
                                  "generated_at": rfc3339(datetime.now(timezone.utc)),
                                  "size_bytes": i, "content_type": "text/plain"})
        store.write_metadata(run, meta)
        time.sleep(0.004)
    wait_until(lambda: os.getxattr(m.mnt / SHARED_RUN / "burst-149.txt", "user.artifact.agent_id")
               == b"agent-149", what="the last file's xattrs")
    for i in range(150):
        assert os.getxattr(m.mnt / SHARED_RUN / f"burst-{i:03d}.txt",
                           "user.artifact.agent_id") == f"agent-{i}".encode()
    assert read_bytes(m.mnt / SHARED_RUN / "metadata.json") == serde_pretty(meta)


def test_metadata_rewritten_with_past_expiry_hides_the_run(store, mounter):
    run = store.run(ALICE, ALICE_RUN)
    m = mounter(store, ALICE, allow_warnings=True)
    assert ALICE_RUN in os.listdir(m.mnt)
    meta = copy.deepcopy(run.meta)
    meta["expires_at"] = rfc3339(datetime.now(timezone.utc) - timedelta(days=1))
    store.write_metadata(run, meta)
    wait_until(lambda: ALICE_RUN not in os.listdir(m.mnt), what="expired run hidden")


def test_client_dir_created_after_mount_shows_its_runs(store, mounter):
    m = mounter(store, "carol", allow_warnings=True)
    assert os.listdir(m.mnt) == ["promote"]
    store.add_run("carol", "carol-run", {"c.txt": b"carol bytes"})
    wait_until(lambda: "carol-run" in os.listdir(m.mnt), what="first run of a new client")
    assert read_bytes(m.mnt / "carol-run" / "c.txt") == b"carol bytes"


def test_other_tenants_changes_do_not_appear(store, mounter):
    m = mounter(store, ALICE, allow_warnings=True)
    store.add_run(BOB, "bob-new-run", {"bob-new.txt": b"bob new"})
    (store.run_dir(BOB, SHARED_RUN) / "bob-new-file.txt").write_bytes(b"bob new file")
    store.add_run(ALICE, "alice-sync-run", {"a.txt": b"a"})      # the sync point
    wait_until(lambda: "alice-sync-run" in os.listdir(m.mnt), what="alice's new run")
    assert "bob-new-run" not in os.listdir(m.mnt)
    assert "bob-new-file.txt" not in os.listdir(m.mnt / SHARED_RUN)
    assert not os.path.exists(m.mnt / "bob-new-run")


def test_many_changes_in_a_burst_all_show(store, mounter):
    m = mounter(store, ALICE)
    expected = {}
    for i in range(20):
        name = f"burst-{i:02d}.txt"
        data = f"burst {i}".encode() * (i + 1)
        (store.run_dir(ALICE, ALICE_RUN) / name).write_bytes(data)
        expected[name] = data
    wait_until(lambda: set(expected) <= set(os.listdir(m.mnt / ALICE_RUN)), what="all burst files")
    for name, data in expected.items():
        assert read_bytes(m.mnt / ALICE_RUN / name) == data


def test_polling_sees_the_changes_inotify_would(store, mounter):
    """-o watch=poll (what a store on a network file system gets), on a
    local store: a new run (after a negative lookup), a new file, metadata.json
    rewritten in place, a run removed, and a promotion through another
    daemon of the store (its change log) are all seen, each within 2 s."""
    m = mounter(store, ALICE, "-o", "watch=poll,poll_ms=200", allow_warnings=True)
    other = mounter(store, ALICE, "-o", "watch=poll", index=store.root / "other.db",
                    allow_warnings=True)
    assert "changes to the store: polled every 200 ms" in m.stderr()

    def within_2s(check, what):
        t0 = time.monotonic()
        wait_until(check, timeout=10, what=what)
        assert time.monotonic() - t0 <= 2.0, f"{what}: {time.monotonic() - t0:.2f} s"

    assert not os.path.exists(m.mnt / "polled-run")         # a cached negative lookup
    store.add_run(ALICE, "polled-run", {"a.txt": b"a"}, workflow_id="wf-polled")
    within_2s(lambda: os.getxattr(m.mnt / "polled-run", "user.artifact.workflow_id")
              == b"wf-polled", "a new run, indexed")
    listing(m.mnt / ALICE_RUN)
    (store.run_dir(ALICE, ALICE_RUN) / "late.txt").write_bytes(b"late")
    within_2s(lambda: "late.txt" in os.listdir(m.mnt / ALICE_RUN), "a new file")

    run = store.run(ALICE, SHARED_RUN)
    meta = copy.deepcopy(run.meta)
    meta["workflow_id"] = "wf-rewritten-in-place"
    store.write_metadata(run, meta)
    within_2s(lambda: os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id")
              == b"wf-rewritten-in-place", "metadata.json rewritten in place")

    shutil.rmtree(store.run_dir(ALICE, "polled-run"))
    within_2s(lambda: not os.path.exists(m.mnt / "polled-run"), "a run removed")

    (other.mnt / "promote" / ALICE_RUN).mkdir(exist_ok=True)
    (other.mnt / "promote" / ALICE_RUN / "from-other.txt").write_bytes(b"other daemon\n")
    within_2s(lambda: os.getxattr(m.mnt / ALICE_RUN / "from-other.txt", "user.artifact.sha256"),
              "a promotion through another daemon, with its SHA-256")
    changes = store.root / ".artifactfs" / "changes" / ALICE / "log"
    assert ALICE_RUN in changes.read_text().split(), "noted in the change log"
