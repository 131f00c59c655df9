"""The request loop (src/daemon/loop.c), whatever its bounds: at most
-o max_idle_threads threads wait in the kernel for requests (2 by
default), at most -o max_threads serve them (10); -o clone_fd keeps
libfuse's own loop.  The mount serves parallel promotions, a listing of
the run they land in while they commit, the FORGETs of a pruned walk, and
stops on SIGTERM.

A request never notifies the kernel itself while others may wait: the
kernel holds a directory's lock for a LOOKUP or READDIRPLUS that waits for
a free request thread, and takes that lock to invalidate an entry.  With
one or two threads, a close() in promote/ that showed its landing itself
hung the mount.
"""

import os
import signal
import threading

import pytest

from conftest import ALICE, ALICE_RUN, EXIT_TIMEOUT, is_mounted, read_metadata, run_cmd

WRITERS, FILES_EACH = 6, 5


@pytest.mark.parametrize("options", [
    (),
    ("-o", "max_threads=1"),
    ("-o", "max_threads=2", "-o", "max_idle_threads=1"),
    ("-o", "max_idle_threads=8"),
    ("-o", "clone_fd"),
], ids=["default", "one thread", "two threads, one idle", "eight idle", "libfuse's loop"])
def test_the_mount_serves_and_stops_whatever_its_thread_bounds(store, mounter, options):
    runs, per_run = 12, 60
    for r in range(runs):
        store.add_run(ALICE, f"{r:08x}-0000-4000-8000-00000000loop",
                      {f"f-{i:02d}.txt": b"l" * i for i in range(per_run)})
    m = mounter(store, ALICE, *options, "-o", "max_cached_files=200")
    failures = []
    landing_dir = m.mnt / ALICE_RUN

    def writer(w: int):
        for i in range(FILES_EACH):
            name = f"w{w}-{i}.txt"
            try:
                with open(m.mnt / "promote" / ALICE_RUN / name, "wb") as f:
                    f.write(name.encode())
                os.listdir(landing_dir)  # the run being landed in, listed meanwhile
            except OSError as e:
                failures.append(f"{name}: {e}")

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(WRITERS)]
    for t in threads:
        t.start()
    # A walk past the bound meanwhile: its prunes send the kernel's FORGETs.
    out = run_cmd(["find", ".", "-type", "f", "-name", "f-*", "-printf", "%s\n"],
                  cwd=m.mnt).stdout.decode().split()
    for t in threads:
        t.join(EXIT_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "writers hung"
    assert not failures, failures
    assert sorted(map(int, out)) == sorted(i for _ in range(runs) for i in range(per_run))
    landed = {f"w{w}-{i}.txt" for w in range(WRITERS) for i in range(FILES_EACH)}
    names = {e["filename"] for e in read_metadata(store.run_dir(ALICE, ALICE_RUN))["artifacts"]}
    assert landed <= names
    assert landed <= set(os.listdir(landing_dir))
    # Threads wait in the kernel: the signal must still end them all.
    os.kill(m.proc.pid, signal.SIGTERM)
    assert m.proc.wait(EXIT_TIMEOUT) == 0
    assert not is_mounted(m.mnt)
    m.state = "stopped"
    assert m.log_problems() == []
    assert [line for line in m.log_lines("info") if "stopping on" in line], m.stderr()


@pytest.mark.parametrize("options", [(), ("-o", "clone_fd")], ids=["ours", "libfuse's"])
def test_an_unmount_ends_the_loop_without_a_signal(store, mounter, options):
    store.add_run(ALICE, ALICE_RUN, {"a.txt": b"a"})
    m = mounter(store, ALICE, *options)
    assert (m.mnt / ALICE_RUN / "a.txt").read_bytes() == b"a"
    assert m.stop() == []
    assert m.proc.returncode == 0
    assert not [line for line in m.log_lines() if "stopping on" in line], m.stderr()
