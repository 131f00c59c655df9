"""FIFOs, sockets, devices and directories where a file is expected.

A session "file" that is not a regular file is refused at once (EINVAL) and
the daemon never waits on it (docs/promote.md).  Every call here runs in a
child process with a deadline, so a daemon that blocked would fail the test
instead of hanging it; the daemon must also still answer afterwards.
A device node must not even be opened: opening a device has side effects
(a tape rewinds, a tty becomes the opener's controlling terminal when
O_NOCTTY is missing, a watchdog starts), so "refused" must mean "looked at
through O_PATH/fstatat and left alone".
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time

import pytest

from conftest import (ALICE, ALICE_RUN, PROMPT, REFUSALS, SHARED_RUN, Inotify, StoreGuard,
                      check_status_safe, outcome, py_child, read_bytes, request, session_dir,
                      strict_metadata)


def make_special(path, kind: str):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        # sun_path is short: bind in a short directory, then move it (same fs).
        short = tempfile.mkdtemp(prefix="s", dir="/tmp")
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(short, "s"))
        s.close()
        os.rename(os.path.join(short, "s"), path)
        os.rmdir(short)
    elif kind == "chardev-null":
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    elif kind == "chardev-zero":
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    elif kind == "directory":
        os.mkdir(path)
        (path / "inner.txt").write_bytes(b"inner")
    else:
        raise ValueError(kind)


KINDS = ["fifo", "socket", "chardev-null", "chardev-zero", "directory"]


def daemon_answers(m):
    """The mount still serves: a time-bounded listing and read succeed."""
    out = py_child("print(len(os.listdir(sys.argv[1])), len(open(sys.argv[2], 'rb').read()))",
                   m.mnt / SHARED_RUN, m.mnt / SHARED_RUN / "report.md", timeout=PROMPT)
    assert out.split()[0] != "0"


@pytest.mark.parametrize("kind", KINDS)
def test_special_session_file_refused_at_once(world, attack_mount, kind):
    """A request for a session "file" that is a FIFO (no writer), a socket,
    a character device or a directory: close() fails with EINVAL within a
    few seconds, nothing lands, the daemon still answers."""
    m = attack_mount
    make_special(session_dir(world, ALICE_RUN) / "special", kind)
    guard = StoreGuard(world)
    start = time.monotonic()
    steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["special"]}, timeout=PROMPT + 5)
    elapsed = time.monotonic() - start
    assert outcome(steps) == "EINVAL", steps
    assert elapsed < PROMPT, f"refusal took {elapsed:.1f} s"
    check_status_safe(m.mnt)
    daemon_answers(m)
    guard.check()


@pytest.mark.parametrize("kind", ["chardev-null", "chardev-zero", "fifo"])
def test_special_session_file_never_opened(world, attack_mount, kind):
    """The daemon refuses a device node or FIFO without opening it (no
    IN_OPEN event on it): opening a device can have side effects, and
    opening a FIFO wakes a writer waiting on it.

    Found by this suite: the session file is opened with openat2(O_RDONLY
    | O_NOFOLLOW | O_NONBLOCK) and only then fstat'ed, so the device is
    opened (IN_OPEN seen) before it is refused.  Fixed by b207e25
    ("session sources and view files are opened only after O_PATH shows a
    regular file")."""
    m = attack_mount
    out = session_dir(world, ALICE_RUN)
    make_special(out / "special", kind)
    guard = StoreGuard(world)
    watch = Inotify(out)
    try:
        steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["special"]}, timeout=PROMPT + 5)
        assert outcome(steps) == "EINVAL", steps
        opened = watch.opened()
    finally:
        watch.close()
    assert "special" not in opened, f"the daemon opened the {kind}"
    guard.check()


def test_fifo_session_file_with_blocked_writer(world, attack_mount):
    """A FIFO with a writer already waiting in open(): the request is still
    refused at once and the waiting writer is not woken (it times out on
    its own, never having been connected to the daemon).

    Found by this suite (same cause as test_special_session_file_never_
    opened): the daemon's non-blocking open of the FIFO completes the
    writer's open, so the agent learns when its request is processed and
    its writer is connected to the daemon's read end.  Fixed by b207e25
    (O_PATH first)."""
    m = attack_mount
    out = session_dir(world, ALICE_RUN)
    os.mkfifo(out / "pipe")
    import subprocess
    import sys
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import os,signal,sys; signal.alarm(4); "
         "fd=os.open(sys.argv[1], os.O_WRONLY); print('connected'); sys.stdout.flush(); "
         "os.write(fd, b'x'*100000)", str(out / "pipe")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.3)
        guard = StoreGuard(world)
        start = time.monotonic()
        steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["pipe"]}, timeout=PROMPT + 5)
        assert outcome(steps) == "EINVAL", steps
        assert time.monotonic() - start < PROMPT
        guard.check()
        daemon_answers(m)
    finally:
        stdout, _ = writer.communicate(timeout=10)
    assert "connected" not in stdout, "the daemon opened the FIFO and released its writer"


@pytest.mark.parametrize("kind", KINDS)
def test_special_file_in_run_dir_hidden(world, attack_mount, kind):
    """A FIFO, socket, device or directory planted in a run dir is not
    listed and every way of reaching it is ENOENT, at once."""
    m = attack_mount
    make_special(world.root / "artifacts" / ALICE / ALICE_RUN / "special", kind)
    guard = StoreGuard(world)
    out = py_child(
        "p = sys.argv[1] + '/special'\n"
        "print(sorted(os.listdir(sys.argv[1])), res(os.stat, p), "
        "res(lambda: open(p, 'rb').read()), res(os.getxattr, p, 'user.artifact.agent_id'))",
        m.mnt / ALICE_RUN, timeout=PROMPT)
    assert out == "['metadata.json', 'notes.txt'] ENOENT ENOENT ENOENT", out
    daemon_answers(m)
    guard.check()


def test_fifo_as_metadata_json(world, mounter):
    """metadata.json is a FIFO: the daemon mounts (one warning for the run),
    lists and serves the run's files, and a promotion into it fails with
    EIO (the metadata cannot be kept valid) -- nothing ever blocks."""
    run_dir = world.root / "artifacts" / ALICE / ALICE_RUN
    os.unlink(run_dir / "metadata.json")
    os.mkfifo(run_dir / "metadata.json")
    m = mounter(world, ALICE, expect_warnings=[r"metadata\.json", *REFUSALS])
    guard = StoreGuard(world)
    out = py_child("print(sorted(os.listdir(sys.argv[1])), open(sys.argv[1] + '/notes.txt', "
                   "'rb').read()[:11])", m.mnt / ALICE_RUN, timeout=PROMPT)
    assert out == "['notes.txt'] b'alice notes'", out
    start = time.monotonic()
    steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["ok.txt"]}, timeout=PROMPT + 5)
    assert outcome(steps) == "EIO", steps
    assert time.monotonic() - start < PROMPT
    daemon_answers(m)
    guard.check()


def test_fifo_at_upload_target_does_not_block(world, attack_mount):
    """A FIFO sits where alice uploads x.txt; opening promote/<run>/x.txt
    without O_TRUNC (which starts from the existing artifact's bytes) does
    not wait on it, and the commit replaces it with a regular file."""
    m = attack_mount
    run_dir = world.root / "artifacts" / ALICE / ALICE_RUN
    os.mkfifo(run_dir / "x.txt")
    guard = StoreGuard(world)
    out = py_child(
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "before = os.pread(fd, 100, 0)\n"
        "os.pwrite(fd, b'new', 0)\n"
        "print(before, res(os.close, fd))",
        m.mnt / "promote" / ALICE_RUN / "x.txt", timeout=PROMPT)
    assert out == "b'' ok", out
    assert stat.S_ISREG(os.lstat(run_dir / "x.txt").st_mode)
    assert read_bytes(run_dir / "x.txt") == b"new"
    strict_metadata(read_bytes(run_dir / "metadata.json"), ALICE_RUN)
    rel = f"artifacts/{ALICE}/{ALICE_RUN}"
    guard.check(allow=[f"{rel}/x.txt", f"{rel}/metadata.json"])
