"""FUSE passthrough: the kernel reads artifacts from the store itself.

With passthrough (the default where the kernel offers it and the daemon
holds CAP_SYS_ADMIN), a read-only open of an artifact hands the kernel the
backing file, and no READ request reaches the daemon: counted here with the
kernel's fuse:fuse_request_send tracepoint, per connection.  What the mount
promises stays true: the bytes, mmap, O_DIRECT, a file replaced or
rewritten in the store seen at once, many opens of one file, and the
daemon serving the reads itself where passthrough is off, not allowed, or
refused by the kernel.  (The counting is tools/fusetrace.py's.)
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import ALICE, REPO_ROOT, SHARED_RUN, daemon_stats, read_bytes, wait_until

sys.path.insert(0, str(REPO_ROOT / "tools"))
from fusetrace import FuseRequests  # noqa: E402  (tools/fusetrace.py, shared with tools/bench)

NOBODY = 65534
# What the tests of passthrough itself mount with: their own option comes
# after ARTIFACTFS_TEST_OPTIONS, so they test it in the pass with it off too.
PASSTHROUGH = ("-o", "passthrough=auto")


def wait_for_start_line(m, text):
    """The daemon logs how it serves reads once the kernel's INIT is in,
    which may be just after it said ready."""
    wait_until(lambda: any(text in line for line in m.log_lines("info")), 2.0,
               what=f"a start line saying {text!r}")


def built_with_passthrough(m) -> bool:
    """Whether mount m's daemon has passthrough compiled in: its log says
    so at start."""
    wait_for_start_line(m, "reads of artifacts:")
    return not any("passthrough is not built in" in line for line in m.log_lines("info"))


@pytest.fixture
def requests():
    made = []

    def count(mnt):
        made.append(FuseRequests(mnt))
        return made[-1]

    yield count
    for r in made:
        r.close()


@pytest.fixture
def big(store):
    """An 8 MiB artifact of alice's."""
    data = os.urandom(8 << 20)
    path = store.run_dir(ALICE, SHARED_RUN) / "passthrough.bin"
    path.write_bytes(data)
    return data


def read_direct(path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, 1 << 20)        # page-aligned, as O_DIRECT wants
        out = bytearray()
        while True:
            n = os.readv(fd, [buf])
            out += buf[:n]
            if n < len(buf):
                return bytes(out)
    finally:
        os.close(fd)


def test_reads_never_reach_the_daemon(store, mounter, big, requests):
    """read(), O_DIRECT and mmap of an artifact: the right bytes, and not
    one READ request sent to the daemon; its statistics say why."""
    m = mounter(store, ALICE, *PASSTHROUGH)
    if not built_with_passthrough(m):
        pytest.skip("passthrough is not built in (libfuse < 3.16): tools/install-deps builds it")
    wait_for_start_line(m, "reads of artifacts: FUSE passthrough")
    path = m.mnt / SHARED_RUN / "passthrough.bin"
    trace = requests(m.mnt)
    assert read_bytes(path) == big
    assert read_direct(path) == big
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mapped:
        assert mapped[:] == big
    counts = trace.counts()
    assert counts.get("OPEN", 0) == 3, counts
    assert "READ" not in counts, counts
    s = daemon_stats(m.mnt)
    assert s["passthrough"] is True and s["passthrough_opens"] == 3 and s["reads"] == 0, s


def test_passthrough_off_serves_reads_in_the_daemon(store, mounter, big, requests):
    m = mounter(store, ALICE, "-o", "passthrough=off")
    wait_for_start_line(m, "reads of artifacts: through the daemon")
    if built_with_passthrough(m):
        wait_for_start_line(m, "passthrough is off (-o passthrough=off)")
    trace = requests(m.mnt)
    assert read_bytes(m.mnt / SHARED_RUN / "passthrough.bin") == big
    assert trace.counts().get("READ", 0) > 0
    s = daemon_stats(m.mnt)
    assert s["passthrough"] is False and s["reads"] > 0 and s["passthrough_opens"] == 0, s


def test_bad_passthrough_value_refused(store, tmp_path):
    from conftest import BIN
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([str(BIN), "-f", "-o", f"client={ALICE},passthrough=on",
                        str(store.root), str(mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "invalid passthrough 'on': use auto or off" in r.stderr


def test_without_cap_sys_admin_the_daemon_reads(tmp_path, mounter, requests):
    """A daemon run by an unprivileged user (mounting through fusermount3)
    lacks CAP_SYS_ADMIN: it says so at start and serves the reads itself."""
    from conftest import build_default_store
    public = Path(tempfile.mkdtemp(prefix="artifactfs-nocap-", dir="/tmp"))
    try:
        os.chmod(public, 0o755)
        user_store = build_default_store(public / "store")
        data = os.urandom(1 << 20)
        (user_store.run_dir(ALICE, SHARED_RUN) / "nocap.bin").write_bytes(data)
        (public / "mnt").mkdir()
        subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(public)], check=True)
        # /dev/fuse may be root's only here: an ACL lets the user open it.
        subprocess.run(["setfacl", "-m", f"u:{NOBODY}:rw", "/dev/fuse"], check=True)
        as_nobody = [shutil.which("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
                     "--clear-groups", "--"]
        m = mounter(user_store, ALICE, *PASSTHROUGH, mnt=public / "mnt", cmd_prefix=as_nobody)
        wait_for_start_line(m, "reads of artifacts: through the daemon")
        if built_with_passthrough(m):
            wait_for_start_line(m, "passthrough needs CAP_SYS_ADMIN")
        trace = requests(m.mnt)
        r = subprocess.run([*as_nobody, "sha256sum", str(m.mnt / SHARED_RUN / "nocap.bin")],
                           capture_output=True, text=True, timeout=30)
        assert r.stdout.split()[0] == hashlib.sha256(data).hexdigest(), r.stderr
        assert trace.counts().get("READ", 0) > 0
        m.unmount()
    finally:
        subprocess.run(["setfacl", "-x", f"u:{NOBODY}", "/dev/fuse"], capture_output=True)
        subprocess.run(["setfacl", "-b", "/dev/fuse"], capture_output=True)
        shutil.rmtree(public, ignore_errors=True)


def test_store_changes_are_seen_through_passthrough(store, mounter, big):
    """A file replaced in the store (a new inode) and one rewritten in
    place: an open after the change reads the new bytes, within a second."""
    m = mounter(store, ALICE)
    run = store.run_dir(ALICE, SHARED_RUN)
    path = m.mnt / SHARED_RUN / "passthrough.bin"
    assert read_bytes(path) == big
    replaced = os.urandom(3 << 20)
    (run / "passthrough.tmp").write_bytes(replaced)
    os.replace(run / "passthrough.tmp", run / "passthrough.bin")
    assert wait_until(lambda: read_bytes(path) == replaced, 1.0)
    rewritten = os.urandom(5 << 20)
    with open(run / "passthrough.bin", "r+b") as f:
        f.write(rewritten)
        f.truncate(len(rewritten))
    assert wait_until(lambda: read_bytes(path) == rewritten, 1.0)
    assert os.stat(path).st_size == len(rewritten)


def test_many_opens_of_one_file_share_its_backing(store, mounter, big):
    """Sixteen readers of one file at once, then one of another, then the
    first again once all are closed: every read whole (the backing id is
    shared while open, given back after the last close, made again)."""
    m = mounter(store, ALICE, *PASSTHROUGH)
    path = m.mnt / SHARED_RUN / "passthrough.bin"
    results = []

    def reader():
        results.append(read_bytes(path) == big)

    threads = [threading.Thread(target=reader) for _ in range(16)]
    handles = [open(path, "rb") for _ in range(4)]      # held across the readers
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 16
    for h in handles:
        assert h.read() == big
        h.close()
    assert read_bytes(m.mnt / SHARED_RUN / "report.md").startswith(b"# Alice")
    assert read_bytes(path) == big
    if built_with_passthrough(m):
        assert daemon_stats(m.mnt)["passthrough_opens"] == 16 + 4 + 2


def test_a_file_the_kernel_refuses_falls_back(tmp_path, mounter, requests):
    """A store on overlayfs: the kernel will not stack a passthrough file
    on it, so the first open is refused; the daemon says so once and
    serves every read itself from then on, and the bytes are right."""
    from conftest import build_default_store
    lower = build_default_store(tmp_path / "lower")
    data = os.urandom(1 << 20)
    (lower.run_dir(ALICE, SHARED_RUN) / "over.bin").write_bytes(data)
    merged, upper, work = tmp_path / "merged", tmp_path / "upper", tmp_path / "work"
    for d in (merged, upper, work):
        d.mkdir()
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower.root},upperdir={upper},workdir={work}", str(merged)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount an overlayfs here: {r.stderr.strip()}")
    m = None
    try:
        m = mounter(merged, ALICE, *PASSTHROUGH,
                    expect_warnings=[r"refuses it as a passthrough backing file"])
        if not built_with_passthrough(m):
            pytest.skip("passthrough is not built in")
        trace = requests(m.mnt)
        for _ in range(2):
            assert read_bytes(m.mnt / SHARED_RUN / "over.bin") == data
        assert trace.counts().get("READ", 0) > 0
        refusals = [line for line in m.log_lines("warning") if "passthrough" in line]
        assert len(refusals) == 1 and "over.bin" in refusals[0], refusals
        assert daemon_stats(m.mnt)["passthrough"] is False
        m.unmount()
    finally:
        # The daemon keeps the overlay busy: it goes first, even on a skip.
        if m is not None and m.state == "running":
            m.stop()
        r = subprocess.run(["umount", str(merged)], capture_output=True, text=True)
        assert r.returncode == 0, f"umount {merged}: {r.stderr}"
