"""The command line: bad input, client ids, FUSE options, the index file,
the ready pipe, help/version, and daemonizing without -f."""

import errno
import os
import re
import sqlite3
import stat
import subprocess

import pytest

from conftest import (
    ALICE, BIN, EXIT_TIMEOUT, READY_TIMEOUT, REPO_ROOT, SHARED_RUN,
    expected_runs, fuse_mounts, fusermount_u, inode_map, is_mounted, pipe_eof, read_bytes,
    wait_ready, wait_until,
)

NO_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]


def mounts_under(path) -> list[str]:
    return [mp for mp in fuse_mounts() if mp.startswith(str(path))]


def run_expecting_failure(args, tmp_path, prefix=()):
    """Runs artifactfs -f -o ready_fd=N ARGS; returns (exit status, ready
    pipe status, ready pipe bytes, stderr).  Anything it mounted is
    unmounted again (and the test then fails on the ready status)."""
    r, w = os.pipe()
    cmd = [*prefix, str(BIN), "-f", "-o", f"ready_fd={w}", *[str(a) for a in args]]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(w,))
    finally:
        os.close(w)
    try:
        status, data = wait_ready(r, READY_TIMEOUT)
        if status == "ready":
            for mp in mounts_under(tmp_path):
                fusermount_u(mp)
        try:
            _, err = proc.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    finally:
        os.close(r)
        for mp in mounts_under(tmp_path):
            fusermount_u(mp, lazy=True)
    return proc.returncode, status, data, err.decode("utf-8", "replace")


def assert_one_error_line(err: str, keyword: str):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("artifactfs: error: "), lines[0]
    assert re.search(keyword, lines[0], re.I), f"{lines[0]!r} does not mention {keyword!r}"


def _client(client):
    return lambda s, mnt, tmp: ["-o", f"client={client}", s.root, mnt]


def _long_client(client):
    return lambda s, mnt, tmp: [f"--client={client}", s.root, mnt]


def _plain_file(tmp):
    (tmp / "plain-file").write_bytes(b"not a directory")
    return tmp / "plain-file"


def _index(path_fn):
    return lambda s, mnt, tmp: ["-o", "client=alice", "-o", f"index={path_fn(s, tmp)}", s.root, mnt]


# id -> (args builder (store, mountpoint, tmp_path), what the error line must mention)
BAD = {
    "no_arguments": (lambda s, mnt, tmp: [], r"store|mount|argument|usage"),
    "client_but_no_store_or_mountpoint": (lambda s, mnt, tmp: ["-o", "client=alice"],
                                          r"store|mount|argument|usage"),
    "missing_mountpoint": (lambda s, mnt, tmp: ["-o", "client=alice", s.root], r"mount"),
    "nonexistent_mountpoint": (lambda s, mnt, tmp: ["-o", "client=alice", s.root, tmp / "no-mnt"],
                               r"mount|no-mnt"),
    "nonexistent_store": (lambda s, mnt, tmp: ["-o", "client=alice", tmp / "no-store", mnt],
                          r"store|no-store"),
    "store_is_a_file": (lambda s, mnt, tmp: ["-o", "client=alice", _plain_file(tmp), mnt],
                        r"store|plain-file|director"),
    "no_client": (lambda s, mnt, tmp: [s.root, mnt], r"client"),
    "client_empty": (_client(""), r"client"),
    "client_dot": (_client("."), r"client"),
    "client_dotdot": (_client(".."), r"client"),
    "client_with_slash": (_client("a/b"), r"client"),
    "client_dotdot_slash": (_client("../bob"), r"client"),
    "client_129_bytes": (_client("a" * 129), r"client"),
    "client_with_space": (_client("a b"), r"client"),
    "client_non_ascii": (_client("é"), r"client"),
    "long_option_client_empty": (_long_client(""), r"client"),
    "long_option_client_dotdot": (_long_client(".."), r"client"),
    "long_option_client_slash": (_long_client("a/b"), r"client"),
    "index_under_missing_dir": (_index(lambda s, tmp: tmp / "no-dir" / "sub" / "index.db"), r"index"),
    "index_under_regular_file": (_index(lambda s, tmp: _plain_file(tmp) / "index.db"), r"index"),
    "index_is_a_directory": (_index(lambda s, tmp: tmp), r"index"),
    "read_ahead_too_large": (lambda s, mnt, tmp: ["-o", "client=alice", "-o",
                                                  "read_ahead_kb=65537", s.root, mnt],
                             r"read_ahead_kb"),
    "max_cached_files_zero": (lambda s, mnt, tmp: ["-o", "client=alice", "-o",
                                                   "max_cached_files=0", s.root, mnt],
                              r"max_cached_files"),
    "file_mode_owner_cannot_read": (lambda s, mnt, tmp: ["-o", "client=alice", "-o",
                                                         "file_mode=0244", s.root, mnt],
                                    r"file_mode"),
    "file_mode_setuid": (lambda s, mnt, tmp: ["-o", "client=alice", "-o", "file_mode=4755",
                                              s.root, mnt], r"file_mode"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_command_line_fails_cleanly(store, tmp_path, case):
    build, keyword = BAD[case]
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    rc, status, data, err = run_expecting_failure(build(store, mnt, tmp_path), tmp_path)
    assert status == "eof" and data == b"", f"ready pipe: {status} {data!r}; stderr: {err}"
    assert rc > 0, f"exit status {rc}; stderr: {err}"
    assert_one_error_line(err, keyword)
    assert not is_mounted(mnt) and mounts_under(tmp_path) == []
    assert not (tmp_path / "no-store").exists()


def test_unreadable_store_fails_cleanly(store, mounter, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mode = os.stat(store.root).st_mode
    os.chmod(store.root, 0)
    try:
        rc, status, data, err = run_expecting_failure(
            ["-o", "client=alice", "-o", f"index={tmp_path / 'index.db'}", store.root, mnt],
            tmp_path, prefix=NO_DAC)
    finally:
        os.chmod(store.root, stat.S_IMODE(mode))
    assert status == "eof" and data == b"", err
    assert rc > 0, err
    assert_one_error_line(err, r"store|permission|denied|" + re.escape(str(store.root)))
    assert mounts_under(tmp_path) == []
    # control: the same command mounts once the store is readable
    m = mounter(store, ALICE, index=tmp_path / "index.db", mnt=mnt, cmd_prefix=NO_DAC)
    assert SHARED_RUN in os.listdir(m.mnt)


@pytest.mark.parametrize("client", ["a", "x" * 128, "A.b_c-D", "cli-mode", "public",
                                    "3f0e7c1a-1d2b-4c3d-8e9f-0a1b2c3d4e5f", "..a", "_"])
def test_valid_client_ids_mount_an_empty_view(store, mounter, client):
    m = mounter(store, client)
    assert os.listdir(m.mnt) == ["promote"]


def test_long_client_option(store, mounter):
    m = mounter(store, None, "--client=alice")
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])


@pytest.mark.parametrize("opts", [["-s"], ["-d"], ["-o", "allow_other"],
                                  ["-o", "default_permissions"],
                                  ["-o", "allow_other,default_permissions"]],
                         ids=lambda o: " ".join(o))
def test_standard_fuse_options(store, mounter, opts):
    m = mounter(store, ALICE, *opts)
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
    assert (read_bytes(m.mnt / SHARED_RUN / "report.md")
            == read_bytes(store.run_dir(ALICE, SHARED_RUN) / "report.md"))
    with pytest.raises(OSError) as exc:
        os.open(m.mnt / SHARED_RUN / "report.md", os.O_WRONLY)
    assert exc.value.errno in (errno.EROFS, errno.EACCES)
    with open("/proc/mounts") as f:
        options = next(line.split()[3] for line in f if line.split()[1] == str(m.mnt))
    for o in opts[-1].split(","):
        if o in ("allow_other", "default_permissions"):
            assert o in options.split(","), options


# ---------------------------------------------------------------- read-ahead

def mount_read_ahead_kb(mnt) -> int:
    dev = os.stat(mnt).st_dev
    return int(open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").read())


@pytest.mark.parametrize("option, expected", [(None, 4096), ("read_ahead_kb=1024", 1024),
                                              ("read_ahead_kb=0", 128)])
def test_read_ahead_of_the_mount(store, mounter, option, expected):
    """Sequential reads are served ahead of the reader: the mount's
    read-ahead is raised from the kernel's 128 KiB (0 keeps that)."""
    m = mounter(store, ALICE, *(["-o", option] if option else []))
    assert mount_read_ahead_kb(m.mnt) == expected
    assert read_bytes(m.mnt / SHARED_RUN / "report.md") == \
        read_bytes(store.run_dir(ALICE, SHARED_RUN) / "report.md")



def test_inode_key_is_made_once_private_and_kept(store, mounter, tmp_path):
    """The first mount draws the key that numbers inodes; it is private to
    the store's owner, and a remount (after the index is deleted, too)
    keeps it and so every number."""
    key_file = store.root / ".artifactfs" / "inode-key"
    assert not key_file.exists()
    m = mounter(store, ALICE)
    key = key_file.read_bytes()
    assert len(key) == 16 and key != bytes(16)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not [n for n in os.listdir(key_file.parent) if "draft" in n]
    before = inode_map(m.mnt, skip_prefixes=("promote/",))
    m.unmount()
    store.default_index.unlink()
    m = mounter(store, ALICE, mnt=m.mnt)
    assert key_file.read_bytes() == key
    assert inode_map(m.mnt, skip_prefixes=("promote/",)) == before


def test_another_key_gives_other_inode_numbers(store, mounter):
    """The numbers come from the key, not from the backing ones alone: the
    same store under another key shows none of the same file numbers."""
    m = mounter(store, ALICE)
    before = inode_map(m.mnt, skip_prefixes=("promote",))
    m.unmount()
    key_file = store.root / ".artifactfs" / "inode-key"
    key_file.write_bytes(bytes(reversed(key_file.read_bytes())))
    m = mounter(store, ALICE, mnt=m.mnt)
    after = inode_map(m.mnt, skip_prefixes=("promote",))
    assert after.keys() == before.keys()
    assert not {rel for rel in before if rel != "." and after[rel] == before[rel]}
    assert after["."] == before["."] == 1


@pytest.mark.parametrize("damage", [b"", b"short", bytes(17)])
def test_damaged_inode_key_refuses_to_mount(store, tmp_path, damage):
    """A key of the wrong size is never replaced (every number would
    change under the backups): the mount fails with one line naming it."""
    key_file = store.root / ".artifactfs" / "inode-key"
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_bytes(damage)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code, status, _, err = run_expecting_failure(["-o", "client=alice", store.root, mnt],
                                                 tmp_path)
    assert code != 0 and status != "ready"
    assert_one_error_line(err, r"inode-key")
    assert key_file.read_bytes() == damage


# ---------------------------------------------------------------- the index

def test_default_index_is_created_sqlite_wal_versioned(store, alice):
    idx = store.default_index
    assert idx.is_file()
    assert idx.read_bytes()[:16] == b"SQLite format 3\0"
    con = sqlite3.connect(f"file:{idx}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert con.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        con.close()


def test_index_option_puts_the_index_there(store, mounter, tmp_path):
    (tmp_path / "idx").mkdir()
    m = mounter(store, ALICE, index=tmp_path / "idx" / "custom.db")
    assert SHARED_RUN in os.listdir(m.mnt)
    assert (tmp_path / "idx" / "custom.db").read_bytes()[:16] == b"SQLite format 3\0"
    assert not store.default_index.exists()


GARBAGE = {
    "random_bytes": bytes((i * 7919 + 13) % 256 for i in range(8192)),
    "sqlite_header_then_garbage": b"SQLite format 3\0" + bytes((i * 31) % 256 for i in range(8176)),
    "text": b"this is not a database\n" * 200,
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_corrupt_index_is_moved_aside_and_rebuilt(store, mounter, kind):
    idx = store.default_index
    idx.parent.mkdir(parents=True, exist_ok=True)
    idx.write_bytes(GARBAGE[kind])
    m = mounter(store, ALICE, expect_warnings=[r"(?i)index|corrupt"])
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
    assert (os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id") == b"wf-alice-shared")
    warnings = m.log_lines("warning")
    assert len(warnings) == 1, warnings
    aside = [p for p in idx.parent.iterdir()
             if p.name.startswith("index.db.corrupt-") and p.read_bytes() == GARBAGE[kind]]
    assert len(aside) == 1, sorted(p.name for p in idx.parent.iterdir())
    assert idx.read_bytes()[:16] == b"SQLite format 3\0"
    before = inode_map(m.mnt, skip_prefixes=("promote/",))
    m.unmount()
    m2 = mounter(store, ALICE, mnt=m.mnt)             # the rebuilt index is fine: no warning
    assert inode_map(m2.mnt, skip_prefixes=("promote/",)) == before


# ---------------------------------------------------------------- ready pipe, help, version

def test_ready_fd_gets_one_ready_line_then_eof(alice):
    assert alice.ready_data == b"ready\n"
    eof, rest = pipe_eof(alice.rfd, 5.0)
    assert eof and rest == b""


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_exits_0_and_prints_usage(tmp_path, flag):
    r = subprocess.run([str(BIN), flag], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert re.search(r"(?i)usage", out) and "client" in out and "STORE" in out, out
    assert mounts_under(tmp_path) == []


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_exits_0_and_prints_version(flag):
    version = re.search(r"version\s*:\s*'([^']+)'", (REPO_ROOT / "meson.build").read_text()).group(1)
    r = subprocess.run([str(BIN), flag], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    out = (r.stdout + r.stderr).decode("utf-8", "replace")
    assert r.returncode == 0, out
    assert "artifactfs" in out and version in out, out


# ---------------------------------------------------------------- daemonizing

def daemon_pids(mnt) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.fsencode(str(mnt)) in argv and any(a.endswith(b"artifactfs") for a in argv[:1]):
            pids.append(int(entry))
    return pids


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_without_f_it_daemonizes_once_mounted(store, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "daemon.log"
    pids = []
    try:
        with open(log, "wb") as f:
            r = subprocess.run([str(BIN), "-o", "client=alice", str(store.root), str(mnt)],
                               stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                               timeout=30)
        out = log.read_text(errors="replace")
        assert r.returncode == 0, out
        assert is_mounted(mnt), out           # mounted by the time the command returns
        pids = daemon_pids(mnt)
        assert len(pids) == 1, pids
        assert sorted(os.listdir(mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
        assert not re.search(r"^artifactfs: error:", out, re.M), out
    finally:
        if is_mounted(mnt):
            if fusermount_u(mnt).returncode != 0:
                fusermount_u(mnt, lazy=True)
    wait_until(lambda: not any(process_alive(p) for p in pids),
               timeout=EXIT_TIMEOUT, what="daemon exits after unmount")
    assert not is_mounted(mnt)
