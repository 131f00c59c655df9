"""The daemon's signals and log levels: SIGHUP reloads without dropping the
mount, SIGUSR1/SIGUSR2 turn logging up and down, SIGTERM unmounts cleanly,
-o loglevel= sets where logging starts.
"""

import os
import signal
import subprocess

from conftest import (
    ALICE, ALICE_RUN, BIN, EXIT_TIMEOUT, is_mounted, read_metadata, wait_until, write_close,
)


def test_sighup_reloads_and_keeps_serving(store, mounter):
    m = mounter(store, ALICE)
    before = sorted(os.listdir(m.mnt))
    os.kill(m.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded on SIGHUP" in m.stderr(), what="the reload's log line")
    assert is_mounted(m.mnt) and m.proc.poll() is None
    assert sorted(os.listdir(m.mnt)) == before
    # Promotion still works, with content types from the table read again.
    assert write_close(m.mnt / "promote" / ALICE_RUN / "after.json", b"{}")["close"] == "ok"
    entry = {e["filename"]: e for e in read_metadata(store.run_dir(ALICE, ALICE_RUN))
             ["artifacts"]}["after.json"]
    assert entry["content_type"] == "application/json"


def test_log_level_option_and_signals(store, mounter):
    m = mounter(store, ALICE, "-o", "loglevel=warning",
                expect_warnings=[r"log level is now \w+ \(SIGUSR[12]\)"])
    assert m.log_lines("info") == [], "warning: no 'serving client' line"
    os.kill(m.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "log level is now info (SIGUSR1)" in m.stderr(), what="info")
    assert write_close(m.mnt / "promote" / ALICE_RUN / "one.txt", b"1")["close"] == "ok"
    wait_until(lambda: any("promotion done" in line for line in m.log_lines("info")),
               what="an info line once at info")
    os.kill(m.proc.pid, signal.SIGUSR1)
    wait_until(lambda: "log level is now debug (SIGUSR1)" in m.stderr(), what="debug")
    (store.run_dir(ALICE, ALICE_RUN) / "by-hand.txt").write_bytes(b"x")
    wait_until(lambda: any("by-hand.txt" in line for line in m.log_lines("debug")),
               what="a debug line for a change in the store")
    # Down past error: it stays at error.  One at a time: signals of one kind
    # that arrive together are delivered once.
    for n in range(3, 7):
        os.kill(m.proc.pid, signal.SIGUSR2)
        wait_until(lambda: m.stderr().count("log level is now") == n, what=f"step {n}")
    assert "log level is now error (SIGUSR2)" in m.stderr().splitlines()[-1]
    infos = len(m.log_lines("info"))
    assert write_close(m.mnt / "promote" / ALICE_RUN / "two.txt", b"2")["close"] == "ok"
    assert len(m.log_lines("info")) == infos, "no info line at error"


def test_sigterm_unmounts_and_exits_0(store, mounter):
    m = mounter(store, ALICE)
    # A directory and a file still open when the signal comes: the kernel
    # never releases them, the daemon frees them itself (LeakSanitizer).
    held_dir = os.open(m.mnt, os.O_RDONLY | os.O_DIRECTORY)
    held_file = os.open(m.mnt / ALICE_RUN / "metadata.json", os.O_RDONLY)
    try:
        os.kill(m.proc.pid, signal.SIGTERM)
        assert m.proc.wait(EXIT_TIMEOUT) == 0
    finally:
        os.close(held_dir)
        os.close(held_file)
    assert not is_mounted(m.mnt)
    m.state = "stopped"     # nothing left for the fixture to unmount
    assert m.log_problems() == []


def test_a_bad_log_level_is_one_line(store, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([str(BIN), "-f", "-o", f"client={ALICE},loglevel=loud",
                        str(store.root), str(mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "artifactfs: error: invalid loglevel 'loud': use error, warning, info or debug"]
    assert not is_mounted(mnt)
