"""promote/ under concurrent load: what agents do to one daemon at once.

Each test drives one daemon from many threads and processes together:
close() racing a setxattr of agent_id, copies of an upload's descriptor
(dup(), child processes, close-on-exec) closed in any order and at the same
moment, writes after a flush, readers of uploads in flight, two openers of
one name, rm -r of a run during promotion, the kernel-server rewriting
files while the kernel forgets inodes.  Afterwards what the daemon
acknowledged must be exactly in the store: every close() that returned 0
has its bytes, size, SHA-256 and agent_id in the run, in metadata.json and
in the view; no close() that failed left its bytes behind.

tools/test runs this file twice: with the rest of the integration suite
under the ASan build, and alone under a ThreadSanitizer build (through
ARTIFACTFS_BIN), where any race the daemon reports fails the test at
teardown (conftest's sanitizer check).  ARTIFACTFS_STRESS scales the
rounds (default 1).
"""

import errno
import hashlib
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    ALICE, ALICE_RUN, DEFAULT_AGENT, XATTR_PREFIX, entries_by_name, expected_files,
    promote_status, read_bytes, read_metadata, xattrs,
)

SCALE = float(os.environ.get("ARTIFACTFS_STRESS", "1"))
DELETED_RUN = "de1e7e00-0000-4000-8000-000000000000"
AGENT_XATTR = XATTR_PREFIX + "agent_id"


def rounds(n: int) -> int:
    return max(1, int(n * SCALE))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload_path(m, run: str, name: str) -> Path:
    return m.mnt / "promote" / run / name


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def close_result(fd: int) -> str:
    """close(fd): "ok" or the errno's name."""
    try:
        os.close(fd)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]


def run_together(*fns):
    """Starts each function in its own thread behind one barrier, so they
    reach the daemon at the same moment; returns their results in order
    (an exception is re-raised)."""
    barrier = threading.Barrier(len(fns))
    results = [None] * len(fns)
    errors = []

    def body(i, fn):
        try:
            barrier.wait()
            results[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def assert_artifact(store, m, run: str, name: str, data: bytes, agents=(DEFAULT_AGENT,)):
    """name holds exactly data in the store and the view, with one entry
    whose size, SHA-256 and agent_id (one of agents) match."""
    run_dir = store.run_dir(ALICE, run)
    assert read_bytes(run_dir / name) == data, f"{run}/{name}: store bytes differ"
    meta = read_metadata(run_dir)
    entries = [a for a in meta["artifacts"] if a["filename"] == name]
    assert len(entries) == 1, f"{name}: {len(entries)} metadata entries"
    entry = entries[0]
    assert entry["size_bytes"] == len(data), name
    assert entry["agent_id"] in agents, f"{name}: agent_id {entry['agent_id']!r}"
    shown = xattrs(m.mnt / run / name)
    assert shown[XATTR_PREFIX + "sha256"] == sha(data).encode(), name
    assert shown[AGENT_XATTR] == entry["agent_id"].encode(), name
    assert read_bytes(m.mnt / run / name) == data, f"/{run}/{name}: view bytes differ"


def assert_no_refusals(m):
    refused = [e for e in promote_status(m.mnt) if e["result"] != "ok"]
    assert not refused, f"refused in promote/.status: {refused[:5]}"


# ------------------------------------------------------------------ agent_id


def test_agent_id_set_while_the_file_closes(store, mounter):
    """setxattr user.artifact.agent_id on an upload while its writer closes
    it: the entry's agent_id is one of the values set (or the default),
    never bytes of freed memory."""
    m = mounter(store, ALICE)
    written = {}
    for i in range(rounds(60)):
        name = f"agent-{i:03d}.bin"
        path = upload_path(m, ALICE_RUN, name)
        values = [f"agent-{i}-{k}-" + "x" * random.randrange(1, 300) for k in range(20)]
        data = random.randbytes(random.randrange(1, 200_000))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        write_all(fd, data)

        def set_agents():
            for value in values:
                try:
                    os.setxattr(path, AGENT_XATTR, value.encode())
                except OSError as e:
                    assert e.errno == errno.EROFS, e   # the upload has ended
        _, result = run_together(set_agents, lambda: close_result(fd))
        assert result == "ok", f"{name}: close {result}"
        written[name] = (data, values)
    for name, (data, values) in written.items():
        assert_artifact(store, m, ALICE_RUN, name, data, agents=(DEFAULT_AGENT, *values))
    assert_no_refusals(m)


# ------------------------------------------------------- copies of a descriptor


def test_copies_of_a_descriptor_closed_at_once_commit_once(store, mounter):
    """Two copies of an upload's descriptor closed at the same moment send
    two FLUSHes at once: both close() calls return 0, the file lands once,
    and nothing is audited as refused."""
    m = mounter(store, ALICE)
    written = {}
    for i in range(rounds(60)):
        name = f"dup-{i:03d}.bin"
        data = random.randbytes(random.randrange(1, 300_000))
        fd = os.open(upload_path(m, ALICE_RUN, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        write_all(fd, data)
        copy = os.dup(fd)
        results = run_together(lambda: close_result(fd), lambda: close_result(copy))
        assert results == ["ok", "ok"], f"{name}: close() returned {results}"
        written[name] = data
    for name, data in written.items():
        assert_artifact(store, m, ALICE_RUN, name, data)
    assert_no_refusals(m)


def test_children_close_copies_while_the_parent_writes(store, mounter):
    """Child processes inherit an upload's descriptor (or close it at exec)
    and close it while the parent keeps writing: each such close may commit
    what was there, the parent's writes go on after it, and the parent's
    close() lands every byte."""
    m = mounter(store, ALICE)
    written = {}
    for i in range(rounds(12)):
        name = f"child-{i:03d}.bin"
        chunks = [random.randbytes(random.randrange(1, 150_000)) for _ in range(6)]
        fd = os.open(upload_path(m, ALICE_RUN, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        children = []
        try:
            for k, chunk in enumerate(chunks):
                if k % 2 == 0:
                    # Holds a copy for a moment, then exits: its close is a FLUSH.
                    children.append(subprocess.Popen(["sleep", "0.0%d" % k], pass_fds=(fd,)))
                else:
                    # Its copy is closed at exec (close-on-exec).
                    children.append(subprocess.Popen(["true"]))
                write_all(fd, chunk)
        finally:
            for child in children:
                assert child.wait() == 0
        assert close_result(fd) == "ok", name
        written[name] = b"".join(chunks)
    for name, data in written.items():
        assert_artifact(store, m, ALICE_RUN, name, data)
    assert_no_refusals(m)


def test_writes_after_a_flush_are_committed_by_the_next_close(store, mounter):
    """A close of one copy commits; writes through the other copy start a
    new version from the committed bytes; its close commits that."""
    m = mounter(store, ALICE)
    for i in range(rounds(40)):
        name = f"again-{i:03d}.bin"
        first, more = random.randbytes(70_000), random.randbytes(90_000)
        fd = os.open(upload_path(m, ALICE_RUN, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        write_all(fd, first)
        copy = os.dup(fd)
        assert close_result(fd) == "ok"
        assert_artifact(store, m, ALICE_RUN, name, first)
        write_all(copy, more)     # the shared offset is past `first`
        assert close_result(copy) == "ok"
        assert_artifact(store, m, ALICE_RUN, name, first + more)
    assert_no_refusals(m)


# ------------------------------------------------------------ two openers

OPEN_ANEW = r"""
import errno, os, sys
path, size = sys.argv[1], int(sys.argv[2])
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
except OSError as e:
    print(errno.errorcode[e.errno], "ok")
    sys.exit(0)
os.write(fd, b"C" * size)
try:
    os.close(fd)
    print("ok ok")
except OSError as e:
    print("ok", errno.errorcode[e.errno])
"""


def test_a_write_after_commit_races_a_new_opener_of_the_name(store, mounter):
    """An upload committed but still open (a copy of its descriptor is) is
    written again while another process opens the same name anew.  One of
    them has the name: the other's write or open fails with EBUSY.  Every
    close() returns 0, and the store holds the bytes of a writer that got
    through, with the metadata of those very bytes."""
    m = mounter(store, ALICE, allow_warnings=True)   # EBUSY refusals are audited
    outcomes = {"old": 0, "new": 0, "both": 0}
    for i in range(rounds(80)):
        name = f"taken-{i:03d}.bin"
        path = upload_path(m, ALICE_RUN, name)
        first = b"A" * 50_000
        again, fresh = b"B" * 50_000, b"C" * 60_000
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        write_all(fd, first)
        copy = os.dup(fd)
        assert close_result(fd) == "ok"

        def write_again():
            try:
                os.pwrite(copy, again, 0)
                wrote = True
            except OSError as e:
                assert e.errno == errno.EBUSY, e
                wrote = False
            return wrote, close_result(copy)

        def open_anew():
            # Another process: the writing process itself would share the upload.
            r = subprocess.run([sys.executable, "-c", OPEN_ANEW, str(path), str(len(fresh))],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
            opened, closed = r.stdout.split()
            assert opened in ("ok", "EBUSY"), opened
            return opened == "ok", closed

        (old_wrote, old_close), (new_wrote, new_close) = run_together(write_again, open_anew)
        assert (old_close, new_close) == ("ok", "ok"), name
        assert old_wrote or new_wrote, f"{name}: both writers were refused"
        landed = read_bytes(store.run_dir(ALICE, ALICE_RUN) / name)
        if old_wrote and new_wrote:
            outcomes["both"] += 1        # one after the other
            assert landed in (again, fresh), name
        elif old_wrote:
            outcomes["old"] += 1
            assert landed == again, name
        else:
            outcomes["new"] += 1
            assert landed == fresh, name
        assert_artifact(store, m, ALICE_RUN, name, landed)
    assert sum(outcomes.values()) == rounds(80), outcomes


# ------------------------------------------------------- mixed load


def test_a_rename_racing_a_failed_close_leaves_the_name_free(store, mounter):
    """A rename() of a file whose close() is failing holds the upload while
    the writer's release ends it.  Whichever of the two lets go last, the
    failed upload goes: the name opens again (never EBUSY) and lands."""
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    good = (run_dir / "metadata.json").read_bytes()
    m = mounter(store, ALICE, expect_warnings=[r"metadata.json does not parse"])
    for i in range(rounds(3)):
        name, moved = f"failed-{i}.txt", f"moved-{i}.txt"
        # Unparsable and just written: the commit waits for it to settle, then fails.
        (run_dir / "metadata.json").write_bytes(b'{"run_id": ')
        fd = os.open(upload_path(m, ALICE_RUN, name), os.O_WRONLY | os.O_CREAT, 0o644)
        write_all(fd, b"never lands")

        def rename() -> str:
            time.sleep(0.2)  # while the close is in its commit
            try:
                os.rename(upload_path(m, ALICE_RUN, name), upload_path(m, ALICE_RUN, moved))
                return "ok"
            except OSError as e:
                return errno.errorcode[e.errno]

        closed, renamed = run_together(lambda: close_result(fd), rename)
        assert closed == "EIO", closed
        assert renamed != "ok", renamed
        (run_dir / "metadata.json").write_bytes(good)
        data = f"lands {i}".encode()
        with open(upload_path(m, ALICE_RUN, name), "wb") as f:
            f.write(data)
        assert_artifact(store, m, ALICE_RUN, name, data)
        assert not (run_dir / moved).exists()


def test_renames_racing_the_release_of_the_file_they_move(store, mounter):
    """close() returns at the flush and the kernel sends the release on
    its own, so a rename right after close (rsync, write-then-rename) holds
    the upload while its release ends it.  Whichever lets go last frees
    it: every file lands, and under ThreadSanitizer no race is reported.
    The race once fixed here (the release still unlocking an upload the
    rename had freed) needs the rename's thread preempted in a window of a
    few instructions, so it showed in few runs; the landings are checked
    in every one."""
    m = mounter(store, ALICE)
    count = rounds(100)

    def writer(t: int) -> None:
        for i in range(count):
            tmp = upload_path(m, ALICE_RUN, f".r{t}-{i}.tmp")
            with open(tmp, "wb") as f:
                f.write(f"file {t}-{i}".encode())
            os.rename(tmp, upload_path(m, ALICE_RUN, f"r{t}-{i}.dat"))

    run_together(*[lambda t=t: writer(t) for t in range(4)])
    for t in range(4):
        for i in range(count):
            assert_artifact(store, m, ALICE_RUN, f"r{t}-{i}.dat", f"file {t}-{i}".encode())
    assert_no_refusals(m)


def test_mixed_load_keeps_every_acknowledged_promotion(store, mounter):
    """Promoters, readers of uploads in flight, a lister, rm -r of a run
    during promotion into it, and the kernel-server rewriting a file, all at
    once, with a small inode cache so the kernel forgets inodes throughout.
    Every acknowledged promotion is in the store as written; the deleted
    run's files and entries agree; the daemon sent the kernel no
    invalidation it refused."""
    m = mounter(store, ALICE, "-o", "max_cached_files=64", allow_warnings=True)
    stop = threading.Event()
    acknowledged = {}          # (run, name) -> bytes, for uploads that no one deletes
    lock = threading.Lock()
    failures = []

    def promoter(worker: int):
        rng = random.Random(worker)
        for i in range(rounds(40)):
            name = f"w{worker}-{i:03d}.dat"
            data = rng.randbytes(rng.randrange(1, 250_000))
            fd = os.open(upload_path(m, ALICE_RUN, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            half = len(data) // 2
            write_all(fd, data[:half])
            if i % 3 == 0:
                subprocess.run(["true"], check=True)    # a close-on-exec FLUSH mid-write
            write_all(fd, data[half:])
            result = close_result(fd)
            with lock:
                if result == "ok":
                    acknowledged[(ALICE_RUN, name)] = data
                else:
                    failures.append((name, result))

    def deleted_run_promoter():
        for i in range(rounds(60)):
            # rm -r of the run takes promote/<run> with it: made again each time.
            try:
                os.mkdir(m.mnt / "promote" / DELETED_RUN)
            except FileExistsError:
                pass
            try:
                fd = os.open(upload_path(m, DELETED_RUN, f"d-{i:03d}.txt"),
                             os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            except FileNotFoundError:
                continue     # removed again before the open
            write_all(fd, b"doomed %d\n" % i)
            result = close_result(fd)
            if result != "ok":
                with lock:
                    failures.append((f"d-{i:03d}.txt", result))

    def deleter():
        while not stop.is_set():
            subprocess.run(["rm", "-rf", str(m.mnt / DELETED_RUN)], capture_output=True)

    def reader():
        staged = m.mnt / "promote" / ALICE_RUN
        while not stop.is_set():
            try:
                names = os.listdir(staged)
            except OSError:
                continue
            for name in names:
                try:
                    os.stat(staged / name)
                    with open(staged / name, "rb") as f:
                        f.read(65536)
                except OSError:
                    pass      # committed and gone meanwhile

    def lister():
        while not stop.is_set():
            for run in (ALICE_RUN, DELETED_RUN):
                try:
                    for name in os.listdir(m.mnt / run):
                        os.stat(m.mnt / run / name)
                except OSError:
                    pass

    kernel_server_file = store.run_dir(ALICE, ALICE_RUN) / "private.txt"

    def kernel_server():
        k = 0
        while not stop.is_set():
            kernel_server_file.write_bytes(b"rewritten %d\n" % k)
            k += 1

    background = [threading.Thread(target=fn) for fn in (deleter, reader, lister, kernel_server)]
    workers = [threading.Thread(target=promoter, args=(w,)) for w in range(4)]
    workers.append(threading.Thread(target=deleted_run_promoter))
    for t in background + workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    for t in background:
        t.join()

    assert not failures, f"close() failed: {failures[:5]}"
    for (run, name), data in acknowledged.items():
        assert_artifact(store, m, run, name, data)
    # An entry goes before its file, so no entry outlives its file (rm -r
    # may have removed metadata.json itself, leaving files without one).
    deleted_dir = store.run_dir(ALICE, DELETED_RUN)
    if (deleted_dir / "metadata.json").exists():
        files = set(expected_files(deleted_dir))
        entries = entries_by_name(read_metadata(deleted_dir))
        assert set(entries) <= files, "an entry of the deleted run outlived its file"
    refused = [line for line in m.stderr().splitlines() if line.startswith("fuse: ")]
    assert not refused, f"the kernel refused notifications: {refused[:3]}"


# ------------------------------------------------------- invalidations


def test_notifications_name_only_inodes_the_daemon_holds(store, mounter):
    """The kernel-server rewrites files while readers walk the view and the
    kernel drops its dentries (drop_caches): the daemon's invalidations race
    the kernel's FORGETs.  A node id is an inode's address: had the daemon
    freed an inode and its memory gone to a new one while it notified, the
    kernel would get a notification for the wrong node and refuse it
    ("fuse: writing device: Not a directory")."""
    # File names as long as run ids: a freed run inode's memory fits a file's.
    runs = [f"{k:08x}-0000-4000-8000-000000000000" for k in range(12)]
    names = [f"{k:08x}-1111-4000-8000-00000000.txt" for k in range(12)]
    for run in runs:
        store.add_run(ALICE, run, {name: b"v0\n" for name in names})
    m = mounter(store, ALICE, "-o", "max_cached_files=32")
    stop = threading.Event()

    def kernel_server():
        rng = random.Random(1)
        k = 0
        while not stop.is_set():
            run_dir = store.run_dir(ALICE, rng.choice(runs))
            (run_dir / rng.choice(names)).write_bytes(b"v%d\n" % k)
            k += 1

    def walker():
        while not stop.is_set():
            for run in runs:
                try:
                    for name in os.listdir(m.mnt / run):
                        os.stat(m.mnt / run / name)
                except OSError:
                    pass

    def dropper():
        while not stop.wait(0.02):
            Path("/proc/sys/vm/drop_caches").write_text("2\n")

    threads = [threading.Thread(target=fn) for fn in (kernel_server, walker, walker, dropper)]
    for t in threads:
        t.start()
    stop.wait(3 * SCALE)
    stop.set()
    for t in threads:
        t.join()
    refused = [line for line in m.stderr().splitlines() if line.startswith("fuse: ")]
    assert not refused, f"the kernel refused {len(refused)} notifications: {refused[:3]}"
