"""Fixtures and helpers for the artifactfs adversarial suite.

Everything the integration suite offers (the ``Store`` builder, the
``mounter`` fixture with its ready_fd start, watchdog and strict stderr
check, ``write_close``, ``promote_status``, ``validate_metadata``...) is
loaded from ``tests/integration/conftest.py`` and re-exported here, so the
test modules of this directory say ``from conftest import ...`` as the
integration tests do.  (It is loaded under its own module name, so this
conftest and that one never collide in ``sys.modules``.)

Added here, for attacks:

* ``StoreGuard``: a digest of the whole store tree (names, types, modes,
  owners, sizes, link counts, file mtimes, file bytes, symlink targets),
  leaving out ``STORE/.artifactfs`` (the daemon's index and staging).  Every
  attack case takes one before the attack and calls ``check()`` after it:
  the store must be exactly as before, except where a case says what a
  legitimate side effect may touch.
* ``world``: the default two-tenant store plus session outputs for alice's
  and bob's runs and a host secret outside the store.
* ``attack_mount``: alice's mount whose refusals (logged as warnings) are
  expected.
* ``errno_of``, ``request``, ``check_status_safe``, ``strict_metadata``,
  ``vmrss_kb``, ``py_child`` (a time-bounded child process, for anything
  that could block).
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_INTEGRATION_CONFTEST = _HERE.parent / "integration" / "conftest.py"
_spec = importlib.util.spec_from_file_location("artifactfs_integration_conftest",
                                               _INTEGRATION_CONFTEST)
integration = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = integration
_spec.loader.exec_module(integration)

from artifactfs_integration_conftest import *  # noqa: E402,F401,F403
from artifactfs_integration_conftest import (  # noqa: E402,F401
    _session_guard, ALICE, BOB, ALICE_RUN, BOB_RUN, SHARED_RUN, LEGACY_RUN, ALICE_MARK,
    BOB_MARK, LEGACY_MARK, SESSION_MARK, TENANT_SECRETS, NOBODY_SECRETS, Store,
    build_default_store, write_close, promote_status, validate_metadata, read_bytes,
    wait_until, File)

# Refusals are logged as warnings, one per refusal: expected in attack cases.
# (A log line is cut at 1024 bytes, so a refusal naming a very long file
# name can lose its verdict: test_traversal.py::test_refusal_log_line_keeps_
# its_verdict covers that; here such a cut line is tolerated.)
REFUSALS = (r"promotion refused", r"deletion refused",
            r"^artifactfs: warning: client \S+ run \S+ file .{300,}$")
# How long an operation that must be refused "at once" may take.
PROMPT = 3.0

HOST_MARK = b"HOST-SECRET-77f1"          # bytes of a file outside the store
SESSION_OK = b"alice session output 3c9a\n"
BOB_SESSION_MARK = b"BOB-SESSION-5e21"


# --------------------------------------------------------------------------
# The store must not change
# --------------------------------------------------------------------------

def _file_sha(path: str) -> str:
    """sha256 of a file's data extents and where they are: a 1 TiB sparse
    file costs its data, not a terabyte of zeros."""
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break           # only a hole is left
            end = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(f"@{start}:".encode())
            os.lseek(fd, start, os.SEEK_SET)
            left = end - start
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            pos = end
        h.update(f"size={size}".encode())
    return h.hexdigest()


def store_digest(root, exclude=(".artifactfs",)) -> dict:
    """relpath -> (type, mode, uid, gid, size, nlink, mtime_ns, content)
    for everything under root (symlinks not followed), leaving out the
    top-level names in exclude.  content is the sha256 of a regular file,
    the target of a symlink, the device number of a device; directories
    carry no mtime (creating and removing a staging file is not a change
    anyone could see), everything else does."""
    root = str(root)
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        with os.scandir(path) as it:
            for entry in it:
                erel = f"{rel}/{entry.name}" if rel else entry.name
                if not rel and entry.name in exclude:
                    continue
                st = entry.stat(follow_symlinks=False)
                kind = stat.S_IFMT(st.st_mode)
                if stat.S_ISDIR(st.st_mode):
                    content, mtime = None, None
                    stack.append(erel)
                elif stat.S_ISREG(st.st_mode):
                    content, mtime = (_file_sha(entry.path) if st.st_size else "empty"), st.st_mtime_ns
                elif stat.S_ISLNK(st.st_mode):
                    content, mtime = os.readlink(entry.path), st.st_mtime_ns
                else:
                    content, mtime = st.st_rdev, st.st_mtime_ns
                out[erel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                             st.st_size if not stat.S_ISDIR(st.st_mode) else None,
                             st.st_nlink if not stat.S_ISDIR(st.st_mode) else None,
                             mtime, content)
    return out


def digest_diff(before: dict, after: dict, allow=()) -> list[str]:
    """The differences, as lines, outside the relpaths (or their subtrees)
    listed in allow."""
    def allowed(rel):
        return any(rel == a or rel.startswith(a.rstrip("/") + "/") for a in allow)

    lines = []
    for rel in sorted(set(before) | set(after)):
        if allowed(rel):
            continue
        if rel not in after:
            lines.append(f"removed: {rel}")
        elif rel not in before:
            lines.append(f"added: {rel} {after[rel][:2]}")
        elif before[rel] != after[rel]:
            lines.append(f"changed: {rel}: {before[rel]} -> {after[rel]}")
    return lines


def store_fingerprint(root, exclude=(".artifactfs",)) -> str:
    """The same facts as store_digest(), folded into one sha256 as the walk
    goes (sorted): for trees too big to keep a dict of."""
    h = hashlib.sha256()
    root = str(root)
    stack = [""]
    while stack:
        rel = stack.pop()
        path = os.path.join(root, rel) if rel else root
        with os.scandir(path) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            if not rel and entry.name in exclude:
                continue
            erel = f"{rel}/{entry.name}" if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append(erel)
                fact = (erel, st.st_mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                fact = (erel, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_nlink,
                        st.st_mtime_ns, _file_sha(entry.path) if st.st_size else "empty")
            else:
                fact = (erel, st.st_mode, st.st_size, st.st_mtime_ns,
                        os.readlink(entry.path) if stat.S_ISLNK(st.st_mode) else st.st_rdev)
            h.update(repr(fact).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


class StoreGuard:
    """A digest of the store taken now; check() asserts it still holds.
    compact=True keeps one fingerprint instead (huge trees; no diff then)."""

    def __init__(self, store, compact: bool = False):
        self.root = store.root if isinstance(store, Store) else Path(store)
        self.compact = compact
        self.before = store_fingerprint(self.root) if compact else store_digest(self.root)

    def check(self, allow=()):
        if self.compact:
            assert not allow, "a compact guard cannot allow changes"
            assert store_fingerprint(self.root) == self.before, "the store changed"
            return
        diff = digest_diff(self.before, store_digest(self.root), allow)
        assert not diff, "the store changed:\n" + "\n".join(diff[:40])

    def changes(self) -> list[str]:
        return digest_diff(self.before, store_digest(self.root))


# --------------------------------------------------------------------------
# The world attacks run in
# --------------------------------------------------------------------------

@pytest.fixture
def host_secret(tmp_path) -> Path:
    """A file outside the store (stands for anything on the host)."""
    d = tmp_path / "host"
    d.mkdir()
    p = d / "shadow"
    p.write_bytes(HOST_MARK + b" root:$6$salt$hash:19000::::::\n")
    os.chmod(p, 0o600)
    return p


@pytest.fixture
def world(tmp_path, host_secret) -> Store:
    """The default store (alice and bob, colliding SHARED_RUN, a legacy
    run, an unscoped session), plus: alice's session output for
    ALICE_RUN (ok.txt), bob's session output for BOB_RUN and SHARED_RUN."""
    s = build_default_store(tmp_path / "store")
    s.add_session_output(ALICE_RUN, {"ok.txt": SESSION_OK})
    s.add_session_output(BOB_RUN, {"bob-session.txt": BOB_SESSION_MARK})
    s.add_session_output(SHARED_RUN, {"bob-shared.txt": BOB_SESSION_MARK})
    s.host_secret = host_secret
    return s


@pytest.fixture
def attack_mount(world, mounter):
    """alice's mount of the world, with refusals expected in its log."""
    return mounter(world, ALICE, expect_warnings=REFUSALS)


def session_dir(store: Store, run: str) -> Path:
    return store.root / "sessions" / run / "output"


# --------------------------------------------------------------------------
# Calls and their outcomes
# --------------------------------------------------------------------------

def errno_of(fn, *args, **kwargs) -> str:
    """'ok', or the errno name the call failed with."""
    try:
        fn(*args, **kwargs)
        return "ok"
    except OSError as e:
        return errno_name(e.errno)


def errno_name(number: int) -> str:
    # ENOTSUP and EOPNOTSUPP are one number on Linux: call it EOPNOTSUPP.
    if number == errno.EOPNOTSUPP:
        return "EOPNOTSUPP"
    return errno.errorcode.get(number, str(number))


def open_close(path, flags, mode=0o644) -> None:
    fd = os.open(path, flags, mode)
    os.close(fd)


def request(mnt, doc, name: str = "req.json", timeout: float = 30) -> dict:
    """Writes a request document into promote/ (doc: a dict, str or bytes)
    in a child process; returns write_close()'s {"open","write","close"}."""
    if isinstance(doc, dict):
        data = json.dumps(doc).encode()
    elif isinstance(doc, str):
        data = doc.encode("utf-8", "surrogateescape")
    else:
        data = bytes(doc)
    return write_close(Path(mnt) / "promote" / name, data, timeout=timeout)


def upload(mnt, run: str, name, data: bytes, timeout: float = 30) -> dict:
    """A direct upload to promote/<run>/<name> in a child process."""
    path = os.path.join(os.fsencode(str(Path(mnt) / "promote" / run)), os.fsencode(name))
    return write_close(os.fsdecode(path), data, timeout=timeout)


def outcome(steps: dict) -> str:
    """The first failing step's errno name, or 'ok'."""
    for step in ("open", "write", "close"):
        if steps.get(step, "ok") != "ok":
            return steps[step]
    return "ok"


def check_status_safe(mnt, forbidden=()) -> list[dict]:
    """promote/.status is UTF-8 JSON lines whose strings hold no control
    characters and none of the forbidden byte strings."""
    raw = read_bytes(Path(mnt) / "promote" / ".status")
    text = raw.decode("utf-8")          # strict: no invalid UTF-8
    for f in forbidden:
        assert f not in raw, f"{f!r} leaked into .status"
    entries = []
    for line in text.splitlines():
        e = json.loads(line)
        for k, v in e.items():
            if isinstance(v, str):
                assert not any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f for c in v), \
                    f".status field {k} holds a control character: {v!r}"
        entries.append(e)
    return entries


def last_status(mnt) -> dict:
    return promote_status(mnt)[-1]


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _strings(doc):
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for k, v in doc.items():
            yield k
            yield from _strings(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _strings(v)


def strict_metadata(raw: bytes, run_id: str, retention_days=7) -> dict:
    """The kernel-server's view of a metadata.json, strictly: strict UTF-8,
    JSON without NaN/Infinity or duplicate keys, no lone surrogate in any
    string (serde refuses them), then the full schema and serde form check
    of validate_metadata()."""
    text = raw.decode("utf-8")
    json.loads(text, parse_constant=_reject_constant)
    doc = validate_metadata(raw, run_id, retention_days=retention_days)
    for s in _strings(doc):
        s.encode("utf-8")               # a lone surrogate fails here
        assert "\0" not in s, f"NUL in a metadata string: {s!r}"
    return doc


def vmrss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def sanitized_build() -> bool:
    """Whether the daemon under test is an ASan build (memory bounds then
    allow for ASan's shadow and quarantine)."""
    try:
        return b"__asan_init" in BIN.read_bytes()
    except OSError:
        return False


def rss_limit_kb(plain_mb: int = 256) -> int:
    return (plain_mb + (768 if sanitized_build() else 0)) * 1024


PY_PRELUDE = r"""
import errno, os, sys, time, json, socket, stat
def res(fn, *a, **k):
    try:
        r = fn(*a, **k)
        return "ok" if r is None or isinstance(r, int) else r
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
"""


def py_child(code: str, *args, timeout: float = 10.0, preexec_fn=None,
             user=None) -> str:
    """Runs code in a child Python (a hung FUSE request then costs the child,
    not the test); returns its stdout.  Fails the test if it does not
    finish within timeout seconds."""
    cmd = [sys.executable, "-c", PY_PRELUDE + code, *[str(a) for a in args]]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, text=True,
                           preexec_fn=preexec_fn, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"child did not finish within {timeout} s (blocked?)")
    assert r.returncode == 0, f"child failed ({r.returncode}): {r.stderr}"
    return r.stdout.strip()


class Inotify:
    """inotify on one directory (ctypes): which names were opened there.
    IN_OPEN is reported for any file type, device nodes and FIFOs
    included, so it tells whether the daemon opened a special file."""
    IN_OPEN = 0x20
    IN_ISDIR = 0x40000000

    def __init__(self, path, mask=IN_OPEN):
        import ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        assert self.fd >= 0, "inotify_init1 failed"
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(path)), mask)
        assert wd >= 0, f"inotify_add_watch({path}) failed"

    def events(self) -> list[tuple[int, str]]:
        import struct
        out = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, pos)
                name = data[pos + 16:pos + 16 + length].rstrip(b"\0").decode(errors="replace")
                out.append((mask, name))
                pos += 16 + length

    def opened(self) -> set[str]:
        return {name for mask, name in self.events() if mask & self.IN_OPEN}

    def close(self):
        os.close(self.fd)


# --------------------------------------------------------------------------
# Helpers built or mounted for a test
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def c_helpers(tmp_path_factory) -> Path:
    """The C helpers of tests/security/helpers, compiled once per session."""
    out = tmp_path_factory.mktemp("helpers")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.fail("no C compiler for the test helpers (tools/install-deps installs gcc)")
    for src in (_HERE / "helpers").glob("*.c"):
        subprocess.run([cc, "-O2", "-Wall", "-o", str(out / src.stem), str(src)], check=True,
                       capture_output=True, timeout=120)
    return out


@pytest.fixture
def tmpfs_dir(tmp_path):
    """A fresh tmpfs mounted on tmp_path/tmpfs (as root): fast to fill with
    a million inodes, instant to throw away, and quiet -- nothing else
    allocates its inodes or blocks, so figures seen through it are the
    test's own.  Unmounted at teardown (after the mounts that use it,
    when requested before the mounter fixture)."""
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4g,nr_inodes=4000000,mode=0755",
                        "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield d
    r = subprocess.run(["umount", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)
