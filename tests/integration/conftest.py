"""Fixtures and helpers for the artifactfs integration tests.

These tests mount the real daemon on real FUSE mounts.  Everything they need
is here:

* ``Store``: builds a RARO storage root (``artifacts/<client>/<run>/...``,
  ``metadata.json`` in the kernel-server's exact serde format, ``sessions/``)
  under a pytest tmp_path; ``build_default_store`` makes the standard world:
  tenants alice and bob whose run ids collide, a legacy run and a session.
* ``Mount`` and the ``mounter`` fixture: start ``artifactfs -f`` with
  ``-o ready_fd=N``, wait for "ready", and at teardown always unmount, wait
  for the daemon and fail the test if it exited non-zero or logged an error
  (or a warning) the test did not declare.  With
  ``ARTIFACTFS_TEST_ALL_TENANTS=1`` in the environment, a tenant's mount is
  instead an ``-o all_tenants`` daemon mounted beside it and the tenant's
  directory bind-mounted where the test looks: every test then runs
  against a bind-mounted subtree, as a sandbox sees one.
  ``ARTIFACTFS_TEST_OPTIONS`` (say ``-o passthrough=off``) adds daemon
  options to every mount, before a test's own (which win).
* small helpers: polling (``wait_until``), /proc/mounts, raw readdir with
  d_ino/d_type, store snapshots, view walks.
* promote/ helpers: the strict kernel-server schema check of a
  metadata.json (``validate_metadata``), the system MIME table
  (``system_content_type``), store snapshots that leave out the daemon's own
  ``STORE/.artifactfs`` (``store_state``), staging leftovers
  (``staging_files``), ``promote/.status`` lines, and shell commands run
  as a user would (``sh``, ``write_close``).

Tests import the helpers with ``from conftest import ...``.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import itertools
import json
import os
import random
import re
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("ARTIFACTFS_BIN") or REPO_ROOT / "build" / "artifactfs")
FUSERMOUNT = shutil.which("fusermount3") or "/usr/bin/fusermount3"

# Mount each tenant as a bind-mounted subtree of an all-tenants daemon.
ALL_TENANTS = os.environ.get("ARTIFACTFS_TEST_ALL_TENANTS") == "1"
# Options for every daemon: the suites run once more with passthrough off.
TEST_OPTIONS = shlex.split(os.environ.get("ARTIFACTFS_TEST_OPTIONS", ""))

READY_TIMEOUT = 10.0   # daemon start until "ready"
EXIT_TIMEOUT = 10.0    # unmount until the daemon has exited
LIVE_TIMEOUT = 3.0     # the spec promises 1 s; polls give up after this
# A hung daemon would hang the test in a FUSE request forever: after this
# many seconds the test's daemons are killed (which aborts their requests).
TEST_TIMEOUT = float(os.environ.get("ARTIFACTFS_TEST_TIMEOUT", "60"))

LOG_RE = re.compile(r"^artifactfs: (error|warning|info|debug): ")
SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|"
                          r"ThreadSanitizer|runtime error:")
VALID_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")

RUN_XATTRS = ("workflow_id", "user_directive", "created_at", "expires_at", "status")
FILE_XATTRS = ("agent_id", "generated_at", "content_type", "size_bytes")
XATTR_PREFIX = "user.artifact."

# --------------------------------------------------------------------------
# The default world
# --------------------------------------------------------------------------

ALICE = "alice"
BOB = "bob"
SHARED_RUN = "6f1c0a4e-2b7d-4c1e-9a55-0d3e7b9c1a42"   # exists for alice AND bob
ALICE_RUN = "0b9e4f5a-7c21-4d6e-8f3a-2a1b3c4d5e6f"
BOB_RUN = "d4c3b2a1-9e8f-4a7b-b6c5-1f2e3d4c5b6a"
LEGACY_RUN = "9a8b7c6d-5e4f-4321-8765-abcdef012345"   # artifacts/<run>/ (no client)

ALICE_MARK = b"ALICE-CONTENT-4b1d"
BOB_MARK = b"BOB-CONTENT-9e7c"
LEGACY_MARK = b"LEGACY-CONTENT-51aa"
SESSION_MARK = b"SESSION-CONTENT-c0de"

# Strings that identify a tenant's data: they must never appear in another
# tenant's mount (names, bytes or xattr values).
TENANT_SECRETS = {
    ALICE: [ALICE_MARK, b"wf-alice", b"alice-agent", ALICE_RUN.encode(), b"private.txt",
            b"notes.txt"],
    BOB: [BOB_MARK, b"wf-bob", b"bob-agent", BOB_RUN.encode(), b"bob-secret",
          b"bob-only"],
}
# Strings nobody may see: the legacy run and the unscoped sessions/ tree.
NOBODY_SECRETS = [LEGACY_MARK, LEGACY_RUN.encode(), b"legacy-secret", b"wf-legacy",
                  SESSION_MARK, b"session-secret"]

# --------------------------------------------------------------------------
# metadata.json as the kernel-server writes it
# --------------------------------------------------------------------------

CONTENT_TYPES = {".png": "image/png", ".csv": "text/csv", ".json": "application/json",
                 ".md": "text/markdown", ".txt": "text/plain"}


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower(), "application/octet-stream")


def rfc3339(when: datetime, nanos: int | None = None) -> str:
    """A UTC time as chrono's to_rfc3339() prints it: offset "+00:00" and a
    fraction of 0, 3, 6 or 9 digits (SecondsFormat::AutoSi)."""
    when = when.astimezone(timezone.utc)
    if nanos is None:
        nanos = when.microsecond * 1000
    base = when.strftime("%Y-%m-%dT%H:%M:%S")
    if nanos == 0:
        frac = ""
    elif nanos % 1_000_000 == 0:
        frac = f".{nanos // 1_000_000:03d}"
    elif nanos % 1000 == 0:
        frac = f".{nanos // 1000:06d}"
    else:
        frac = f".{nanos:09d}"
    return f"{base}{frac}+00:00"


def serde_pretty(obj) -> bytes:
    """serde_json::to_string_pretty: 2-space indent, insertion order, UTF-8,
    no trailing newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")


@dataclass
class File:
    """A backing file: data, mode, and an optional hole before the data."""
    data: bytes = b""
    mode: int = 0o644
    hole: int = 0

    @property
    def size(self) -> int:
        return self.hole + len(self.data)

    @property
    def content(self) -> bytes:
        return b"\0" * self.hole + self.data


def as_file(spec) -> File:
    if isinstance(spec, File):
        return spec
    if isinstance(spec, str):
        spec = spec.encode()
    return File(bytes(spec))


def make_metadata(run_id: str, files: dict, *, workflow_id: str, user_directive: str,
                  created: datetime, agent: str = "agent", status: str = "active") -> dict:
    """An ArtifactMetadata document, fields in schema order."""
    artifacts = []
    for i, (name, f) in enumerate(files.items()):
        gen = created + timedelta(seconds=10 + i)
        artifacts.append({
            "filename": name,
            "agent_id": f"{agent}-{i}",
            "generated_at": rfc3339(gen, nanos=(gen.microsecond * 1000) or 120_000_000),
            "size_bytes": as_file(f).size,
            "content_type": content_type(name),
        })
    return {
        "run_id": run_id,
        "workflow_id": workflow_id,
        "user_directive": user_directive,
        "created_at": rfc3339(created, nanos=created.microsecond * 1000 + 789),
        "expires_at": rfc3339(created + timedelta(days=7), nanos=created.microsecond * 1000 + 789),
        "artifacts": artifacts,
        "status": status,
    }


def write_file(path: Path, f: File) -> None:
    """Writes a file IN PLACE (same inode if it exists), as the kernel-server
    does: open with O_TRUNC, write, no rename."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if f.hole:
            os.lseek(fd, f.hole, os.SEEK_SET)
        view = memoryview(f.data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if f.hole and not f.data:
            os.ftruncate(fd, f.hole)
    finally:
        os.close(fd)
    os.chmod(path, f.mode)


@dataclass
class Run:
    client: str | None          # None: a legacy run directly under artifacts/
    run_id: str
    path: Path
    files: dict                 # name -> File
    meta: dict | None           # the metadata.json document, when it is one

    def entry(self, name: str) -> dict | None:
        for a in (self.meta or {}).get("artifacts", []):
            if a.get("filename") == name:
                return a
        return None


# --------------------------------------------------------------------------
# inode numbers: the view shows a keyed permutation of the backing ones
# --------------------------------------------------------------------------

_MASK64 = (1 << 64) - 1
SHOWN_RESERVED = {0, 1, 0x7fffffffffffff01, 0x7fffffffffffff02}


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK64


def siphash24_u64(key: bytes, message: int) -> int:
    """SipHash-2-4 of one 8-byte little-endian word, written from the paper
    (an independent check of the daemon's C)."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [k0 ^ 0x736f6d6570736575, k1 ^ 0x646f72616e646f6d,
         k0 ^ 0x6c7967656e657261, k1 ^ 0x7465646279746573]

    def rounds(n):
        for _ in range(n):
            v[0] = (v[0] + v[1]) & _MASK64; v[1] = _rotl(v[1], 13) ^ v[0]
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _MASK64; v[3] = _rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & _MASK64; v[3] = _rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & _MASK64; v[1] = _rotl(v[1], 17) ^ v[2]
            v[2] = _rotl(v[2], 32)

    last = 8 << 56
    v[3] ^= message; rounds(2); v[0] ^= message
    v[3] ^= last; rounds(2); v[0] ^= last
    v[2] ^= 0xff; rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def shown_ino(key: bytes, backing: int) -> int:
    """The documented permutation: a 4-round Feistel network over 64 bits
    (round i: F = low 32 bits of SipHash(key, i << 32 | right)), applied
    again until the result is below 2^63 and not reserved."""
    def encrypt(block):
        left, right = block >> 32, block & 0xffffffff
        for i in range(4):
            left, right = right, left ^ (siphash24_u64(key, (i << 32) | right) & 0xffffffff)
        return (left << 32) | right

    shown = encrypt(backing)
    while shown >= 1 << 63 or shown in SHOWN_RESERVED:
        shown = encrypt(shown)
    return shown


class Store:
    """A RARO storage root under a temporary directory."""

    def __init__(self, root: Path):
        (Path(root) / "artifacts").mkdir(parents=True, exist_ok=True)
        (Path(root) / "sessions").mkdir(exist_ok=True)
        self.root = Path(root).resolve()
        self.runs: dict[tuple, Run] = {}

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def default_index(self) -> Path:
        return self.root / ".artifactfs" / "index.db"

    def client_dir(self, client: str) -> Path:
        return self.artifacts / client

    def shown_ino(self, path) -> int:
        """The st_ino a mount shows for the backing file at path (the store's
        inode key exists once the store has been mounted)."""
        key = (self.root / ".artifactfs" / "inode-key").read_bytes()
        return shown_ino(key, os.lstat(path).st_ino)

    def run_dir(self, client: str | None, run_id: str) -> Path:
        return (self.artifacts / run_id) if client is None else (self.artifacts / client / run_id)

    def run(self, client: str | None, run_id: str) -> Run:
        return self.runs[(client, run_id)]

    def add_run(self, client: str | None, run_id: str, files: dict | None = None, *,
                metadata=True, expired: bool = False, workflow_id: str | None = None,
                user_directive: str = "", created: datetime | None = None,
                agent: str | None = None) -> Run:
        """Creates a run dir with files.  metadata: True (generated from the
        files), a dict (written in serde format), bytes (written as is), or
        None (no metadata.json)."""
        path = self.run_dir(client, run_id)
        path.mkdir(parents=True, exist_ok=True)
        files = {name: as_file(spec) for name, spec in (files or {}).items()}
        for name, f in files.items():
            write_file(path / name, f)
        now = datetime.now(timezone.utc)
        if created is None:
            created = now - (timedelta(days=8) if expired else timedelta(hours=1))
        meta = None
        if metadata is True:
            meta = make_metadata(run_id, files,
                                 workflow_id=workflow_id or f"wf-{client}-{run_id[:8]}",
                                 user_directive=user_directive, created=created,
                                 agent=agent or f"{client}-agent")
            write_file(path / "metadata.json", File(serde_pretty(meta)))
        elif isinstance(metadata, dict):
            meta = metadata
            write_file(path / "metadata.json", File(serde_pretty(meta)))
        elif isinstance(metadata, (bytes, bytearray)):
            write_file(path / "metadata.json", File(bytes(metadata)))
        run = Run(client, run_id, path, files, meta)
        self.runs[(client, run_id)] = run
        return run

    def write_metadata(self, run: Run, meta) -> None:
        """Rewrites a run's metadata.json in place (dict: serde format)."""
        if isinstance(meta, dict):
            run.meta = meta
            data = serde_pretty(meta)
        else:
            run.meta = None
            data = bytes(meta)
        write_file(run.path / "metadata.json", File(data))

    def add_session_output(self, run_id: str, files: dict) -> None:
        out = self.root / "sessions" / run_id / "output"
        out.mkdir(parents=True, exist_ok=True)
        for name, spec in files.items():
            write_file(out / name, as_file(spec))


def build_default_store(root: Path) -> Store:
    """alice and bob, both with run SHARED_RUN (different files and bytes),
    one more run each, a legacy run and a session output."""
    s = Store(root)
    rnd = random.Random(20260207)
    s.add_run(ALICE, SHARED_RUN, {
        "report.md": b"# Alice's report\n\n" + ALICE_MARK + b"\n",
        "data.csv": b"quarter,revenue\nQ3,1200\n" + ALICE_MARK + b"\n",
        "plot.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16 + ALICE_MARK,
        "run.sh": File(b"#!/bin/sh\necho alice\n# " + ALICE_MARK + b"\n", mode=0o755),
        "private.txt": File(ALICE_MARK + b" private\n", mode=0o600),
        "empty.txt": b"",
        "big.bin": rnd.randbytes(3 * 1024 * 1024 + 123),
        "sparse.img": File(ALICE_MARK, hole=8 * 1024 * 1024),
        "résumé final.txt": "Résumé — alice\n".encode() + ALICE_MARK,
    }, workflow_id="wf-alice-shared", user_directive="Summarise the Q3 numbers for Alice")
    s.add_run(ALICE, ALICE_RUN, {"notes.txt": b"alice notes " + ALICE_MARK},
              workflow_id="wf-alice-second", user_directive="")
    s.add_run(BOB, SHARED_RUN, {
        "report.md": b"# Bob's report\n\n" + BOB_MARK + b"\n",
        "data.csv": b"quarter,cost\nQ3,999\n" + BOB_MARK + b"\n",
        "bob-secret.txt": BOB_MARK + b" the secret",
    }, workflow_id="wf-bob-shared", user_directive="Bob's directive " + BOB_MARK.decode())
    s.add_run(BOB, BOB_RUN, {"bob-only.txt": b"bob only " + BOB_MARK},
              workflow_id="wf-bob-second", user_directive="bob")
    s.add_run(None, LEGACY_RUN, {"legacy-secret.txt": LEGACY_MARK},
              workflow_id="wf-legacy", user_directive=LEGACY_MARK.decode(), agent="legacy")
    s.add_session_output(SHARED_RUN, {"session-secret.txt": SESSION_MARK})
    return s


# --------------------------------------------------------------------------
# What the view should show, computed from the backing tree
# --------------------------------------------------------------------------

def valid_id(name: str) -> bool:
    return bool(VALID_ID_RE.match(name)) and name not in (".", "..")


def run_expired(run_dir: Path) -> bool:
    try:
        meta = json.loads((run_dir / "metadata.json").read_bytes())
        when = datetime.fromisoformat(meta["expires_at"].replace("Z", "+00:00"))
    except Exception:
        return False      # no valid expires_at: never expires
    return when < datetime.now(timezone.utc)


def expected_runs(store: Store, client: str, show_expired: bool = False) -> list[str]:
    cdir = store.client_dir(client)
    if not cdir.is_dir() or cdir.is_symlink():
        return []
    runs = []
    for name in os.listdir(cdir):
        st = os.lstat(cdir / name)
        if not stat.S_ISDIR(st.st_mode) or not valid_id(name) or name == "promote":
            continue
        if not show_expired and run_expired(cdir / name):
            continue
        runs.append(name)
    return sorted(runs)


def expected_files(run_dir: Path) -> list[str]:
    """The regular files of a backing run dir (what the view lists)."""
    return sorted(n for n in os.listdir(run_dir) if stat.S_ISREG(os.lstat(run_dir / n).st_mode))


def view_file_mode(backing_mode: int) -> int:
    return 0o644 | (backing_mode & 0o111)


# --------------------------------------------------------------------------
# Generic helpers
# --------------------------------------------------------------------------

def wait_until(predicate, timeout: float = LIVE_TIMEOUT, interval: float = 0.02,
               what: str = "condition"):
    """Polls predicate until it returns a true value (returned) or timeout
    passes (AssertionError).  OSErrors raised by predicate count as false."""
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except OSError as e:
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout} s "
                                 f"(last value {last!r}, last error {last_exc!r})")
        time.sleep(interval)


def _unescape_mount_field(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def fuse_mounts() -> list[str]:
    """Mount points of every FUSE filesystem in /proc/mounts."""
    res = []
    with open("/proc/mounts", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 3 and fields[2].startswith("fuse"):
                res.append(_unescape_mount_field(fields[1]))
    return res


def is_mounted(path) -> bool:
    return str(path) in fuse_mounts()


def fusermount_u(path, lazy: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([FUSERMOUNT, "-uz" if lazy else "-u", str(path)],
                          capture_output=True, text=True, timeout=30)


def bind_mount(source, target) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", "--bind", str(source), str(target)],
                          capture_output=True, text=True, timeout=30)


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def xattrs(path, follow_symlinks: bool = True) -> dict[str, bytes]:
    return {n: os.getxattr(path, n, follow_symlinks=follow_symlinks)
            for n in os.listxattr(path, follow_symlinks=follow_symlinks)}


def tree_snapshot(root, exclude=()) -> dict:
    """Everything about a tree a change could touch (not atimes): type, mode,
    owner, size, mtime, ctime, inode, nlink, content hash, link target,
    xattrs, for root and every entry below it (symlinks not followed)."""
    root = Path(root)
    snap = {}

    def record(p: Path):
        rel = os.path.relpath(p, root)
        if any(rel == e or rel.startswith(e + "/") for e in exclude):
            return
        st = os.lstat(p)
        entry = [stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, st.st_gid, st.st_size,
                 st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_nlink]
        if stat.S_ISREG(st.st_mode):
            entry.append(sha256_file(p))
        elif stat.S_ISLNK(st.st_mode):
            entry.append(os.readlink(p))
        try:
            entry.append(sorted(xattrs(p, follow_symlinks=False).items()))
        except OSError as e:
            entry.append(f"xattr error {e.errno}")
        snap[rel] = entry

    record(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            record(Path(dirpath) / name)
    return snap


def run_cmd(args, check=True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, timeout=60, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{args} exited {r.returncode}: {r.stderr!r}")
    return r


# raw readdir: Python's scandir hides d_type (it stats when it is DT_UNKNOWN).
class _Dirent64(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir64.argtypes = [ctypes.c_void_p]
_libc.readdir64.restype = ctypes.POINTER(_Dirent64)
_libc.closedir.argtypes = [ctypes.c_void_p]
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.getxattr.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.getxattr.restype = ctypes.c_ssize_t
_libc.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.listxattr.restype = ctypes.c_ssize_t

DT_UNKNOWN, DT_DIR, DT_REG = 0, 4, 8


def iter_readdir(path, start: int | None = None, skim: int = 0):
    """Yields (name, d_ino, d_type, telldir() after it) for each entry
    readdir(3) gives, "." and ".." included: from the beginning or, with
    start, from seekdir(start), after reading skim entries first in the
    same open directory (a seek sends the daemon that cookie)."""
    d = _libc.opendir(os.fsencode(str(path)))
    if not d:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(path))
    try:
        for _ in range(skim):
            _libc.readdir64(d)
        if start is not None:
            _libc.seekdir(d, start)
        while True:
            ctypes.set_errno(0)
            ent = _libc.readdir64(d)
            if not ent:
                e = ctypes.get_errno()
                if e:
                    raise OSError(e, os.strerror(e), str(path))
                return
            yield (os.fsdecode(ent.contents.d_name), ent.contents.d_ino, ent.contents.d_type,
                   _libc.telldir(d))
    finally:
        _libc.closedir(d)


def raw_readdir(path) -> dict[str, tuple[int, int]]:
    """name -> (d_ino, d_type) straight from readdir(3), "." and ".." left out."""
    return {name: (ino, dtype) for name, ino, dtype, _ in iter_readdir(path)
            if name not in (".", "..")}


def readdir_with_positions(path, start: int | None = None,
                           skim: int = 0) -> list[tuple[str, int]]:
    """(name, telldir() after it) of each entry, as iter_readdir() reads them."""
    return [(name, position) for name, _, _, position in iter_readdir(path, start, skim)]


STATS_XATTR = "user.artifactfs.stats"


def daemon_stats(mnt) -> dict:
    """{"opens", "reads", "read_bytes", "passthrough_opens", "passthrough"}
    of the daemon serving mnt, since it mounted (the unlisted xattr of a
    tenant's directory or the root), and on the daemon's root only
    "cached_files", the file inodes it holds.  Reads of a passthrough open
    reach the kernel, not the daemon: they are in none of the counts."""
    return json.loads(os.getxattr(str(mnt), STATS_XATTR))


def c_getxattr(path, name, size: int) -> tuple[int, int, bytes]:
    """getxattr(2) with a buffer of the given size: (return value, errno, bytes)."""
    buf = ctypes.create_string_buffer(max(size, 1))
    ctypes.set_errno(0)
    n = _libc.getxattr(os.fsencode(str(path)), name.encode(), buf if size else None, size)
    return n, ctypes.get_errno(), buf.raw[:max(n, 0)] if size else b""


def c_listxattr(path, size: int) -> tuple[int, int]:
    buf = ctypes.create_string_buffer(max(size, 1))
    ctypes.set_errno(0)
    n = _libc.listxattr(os.fsencode(str(path)), buf if size else None, size)
    return n, ctypes.get_errno()


def walk_view(mnt, volatile=()) -> dict[str, dict]:
    """Everything reachable in a mount: relpath -> {type, data, xattrs}.
    The bytes of the files named in volatile (relpaths, e.g.
    "promote/.status") are not recorded."""
    mnt = Path(mnt)
    out = {}

    def visit(p: Path, rel: str):
        st = os.lstat(p)
        info = {"type": "d" if stat.S_ISDIR(st.st_mode) else "f", "ino": st.st_ino,
                "xattrs": xattrs(p, follow_symlinks=False), "data": None}
        if stat.S_ISREG(st.st_mode) and rel not in volatile:
            info["data"] = read_bytes(p)
        out[rel] = info
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(p)):
                visit(p / name, f"{rel}/{name}" if rel != "." else name)

    visit(mnt, ".")
    return out


def inode_map(mnt, skip_prefixes=()) -> dict[str, int]:
    """relpath -> st_ino of everything reachable, leaving out the relpaths
    that start with one of skip_prefixes."""
    return {rel: info["ino"] for rel, info in walk_view(mnt).items()
            if not any(rel.startswith(p) for p in skip_prefixes)}


# --------------------------------------------------------------------------
# promote/: what artifactfs writes into the store
# --------------------------------------------------------------------------

META_RUN_KEYS = ["run_id", "workflow_id", "user_directive", "created_at", "expires_at",
                 "artifacts", "status"]
META_FILE_KEYS = ["filename", "agent_id", "generated_at", "size_bytes", "content_type"]
# chrono's to_rfc3339(): UTC with offset "+00:00", a fraction of 0, 3, 6 or 9 digits
CHRONO_TS_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})"
                          r"(?:\.(\d{3}|\d{6}|\d{9}))?\+00:00\Z")
# any RFC 3339 time (promote/.status)
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})\Z")
DAY_NS = 86400 * 10**9
DEFAULT_AGENT = "artifactfs"
STATUS_KEYS = {"time", "action", "run", "file", "result", "reason"}
C_LOCALE_ENV = {**os.environ, "LC_ALL": "C", "LANG": "C"}


def ts_ns(text: str) -> int:
    """A chrono RFC 3339 timestamp as nanoseconds since the epoch
    (AssertionError when it is not in that exact form)."""
    m = CHRONO_TS_RE.match(text) if isinstance(text, str) else None
    assert m, f"timestamp {text!r} is not RFC 3339 as chrono prints it (...+00:00)"
    when = datetime(*(int(g) for g in m.groups()[:6]), tzinfo=timezone.utc)
    frac = m.group(7) or ""
    return int(when.timestamp()) * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)


def _no_duplicate_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys in a JSON object: {keys}"
    return dict(pairs)


def validate_metadata(raw: bytes, run_id: str, *, retention_days: int | None = 7) -> dict:
    """The strict check of a metadata.json against what the kernel-server's
    serde parser requires, and its serde_json::to_string_pretty form:
    exactly the 7 run fields and 5 fields per artifact, in schema order,
    with their types; timestamps as chrono prints them; status "active";
    expires_at - created_at == retention_days (None: not checked); no
    filename twice; the bytes are the 2-space pretty form, no trailing
    newline.  Returns the parsed document."""
    doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    assert isinstance(doc, dict), f"metadata.json is a {type(doc).__name__}"
    assert list(doc) == META_RUN_KEYS, f"run fields {list(doc)}"
    for k in META_RUN_KEYS:
        if k != "artifacts":
            assert type(doc[k]) is str, f"{k} is {doc[k]!r}"
    assert doc["run_id"] == run_id
    assert doc["status"] == "active"
    created, expires = ts_ns(doc["created_at"]), ts_ns(doc["expires_at"])
    if retention_days is not None:
        assert expires - created == retention_days * DAY_NS, \
            f"expires_at - created_at = {(expires - created) / DAY_NS} days, not {retention_days}"
    assert type(doc["artifacts"]) is list
    names = []
    for a in doc["artifacts"]:
        assert type(a) is dict, a
        assert list(a) == META_FILE_KEYS, f"artifact fields {list(a)}"
        for k in ("filename", "agent_id", "generated_at", "content_type"):
            assert type(a[k]) is str, f"{a.get('filename')}: {k} is {a[k]!r}"
        assert type(a["size_bytes"]) is int and 0 <= a["size_bytes"] < 2**64, a
        ts_ns(a["generated_at"])
        names.append(a["filename"])
    assert len(names) == len(set(names)), f"a filename listed twice: {sorted(names)}"
    assert raw == serde_pretty(doc), "metadata.json is not in serde_json's pretty form"
    return doc


def read_metadata(run_dir, *, retention_days: int | None = 7) -> dict:
    run_dir = Path(run_dir)
    return validate_metadata(read_bytes(run_dir / "metadata.json"), run_dir.name,
                             retention_days=retention_days)


def entries_by_name(meta: dict) -> dict:
    return {a["filename"]: a for a in meta["artifacts"]}


@functools.lru_cache(maxsize=None)
def _mime_table() -> dict:
    table = {}
    with open("/etc/mime.types", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split("#", 1)[0].split()
            for ext in fields[1:]:
                table.setdefault(ext.lower(), fields[0])
    return table


def system_content_type(name: str) -> str:
    """content_type for a file name by /etc/mime.types (last extension,
    any case; the first line naming an extension wins), else
    application/octet-stream."""
    if "." not in name:
        return "application/octet-stream"
    return _mime_table().get(name.rsplit(".", 1)[1].lower(), "application/octet-stream")


def store_state(store) -> dict:
    """tree_snapshot of the store without the daemon's private
    STORE/.artifactfs (index, staging) and without the root's own entry
    (whose times change when .artifactfs is created)."""
    root = store.root if isinstance(store, Store) else Path(store)
    snap = tree_snapshot(root, exclude=(".artifactfs",))
    snap.pop(".", None)
    return snap


def staging_dir(store, client: str) -> Path:
    root = store.root if isinstance(store, Store) else Path(store)
    return root / ".artifactfs" / "staging" / client


def staging_files(store, client: str) -> list[str]:
    """Everything but directories under STORE/.artifactfs/staging/<client>/,
    and but the lock file each live instance holds (<instance>/lock)."""
    base = staging_dir(store, client)
    out = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            rel = os.path.relpath(os.path.join(dirpath, name), base)
            if not (name == "lock" and os.path.dirname(rel) and
                    os.path.dirname(os.path.dirname(rel)) == ""):
                out.append(rel)
    return sorted(out)


def promote_status(mnt) -> list[dict]:
    """promote/.status as a list of entries (each line one JSON object)."""
    raw = read_bytes(Path(mnt) / "promote" / ".status")
    text = raw.decode("utf-8")
    assert text == "" or text.endswith("\n"), f".status does not end with a newline: {text[-80:]!r}"
    return [json.loads(line) for line in text.splitlines()]


def check_status_entry(e: dict) -> dict:
    """The fields of a promote/.status entry (test_promote checks that there
    are no others)."""
    assert STATUS_KEYS <= set(e), f".status entry keys {sorted(e)}"
    assert type(e["time"]) is str and RFC3339_RE.match(e["time"]), e
    assert e["action"] in ("promote", "delete"), e
    assert e["run"] is None or type(e["run"]) is str, e
    assert e["file"] is None or type(e["file"]) is str, e
    assert type(e["result"]) is str and (e["result"] == "ok" or re.fullmatch(r"E[A-Z0-9]+",
                                                                             e["result"])), e
    assert e["reason"] is None or (type(e["reason"]) is str and "\n" not in e["reason"]), e
    if e["result"] != "ok":
        assert e["reason"], f"a refusal without a reason: {e}"
    return e


def sh(script: str, *args, shell: str = "bash", cwd=None,
       timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs a shell script as a user would, in the C locale (English
    messages), stdin from /dev/null; $1, $2... are args.  stdout and
    stderr are text."""
    return subprocess.run([shell, "-c", script, shell, *[str(a) for a in args]],
                          capture_output=True, timeout=timeout, cwd=cwd, env=C_LOCALE_ENV,
                          stdin=subprocess.DEVNULL, text=True, errors="replace")


def write_through(path, data: bytes) -> None:
    """Creates or truncates path, writes all of data with os.write (no
    buffering layer), then closes it: in promote/, the close's error (a
    refused commit) raises."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


_WRITE_CLOSE = r"""
import errno, os, sys
path, data = sys.argv[1], sys.stdin.buffer.read()
res = {}
try:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
except OSError as e:
    print(f"open {errno.errorcode[e.errno]}"); sys.exit(0)
try:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    print("write ok")
except OSError as e:
    print(f"write {errno.errorcode[e.errno]}")
try:
    os.close(fd)
    print("close ok")
except OSError as e:
    print(f"close {errno.errorcode[e.errno]}")
"""


def write_close(path, data: bytes, timeout: float = 15) -> dict:
    """Writes a file in a child process (which a hung daemon cannot hang:
    the child times out) and returns {"open"|"write"|"close": "ok" or the
    errno name} for the steps it reached."""
    r = subprocess.run([sys.executable, "-c", _WRITE_CLOSE, str(path)], input=data,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = {}
    for line in r.stdout.decode().splitlines():
        step, result = line.split()
        out[step] = result
    return out


# --------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------

_ALL_MOUNTS: list["Mount"] = []


def wait_ready(rfd: int, timeout: float) -> tuple[str, bytes]:
    """Reads the ready pipe: ("ready", data), ("eof", data) or ("timeout", data)."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout", data
        r, _, _ = select.select([rfd], [], [], left)
        if not r:
            continue
        chunk = os.read(rfd, 256)
        if not chunk:
            return "eof", data
        data += chunk
        if data.startswith(b"ready\n"):
            return "ready", data
        if len(data) >= 6:
            return "garbage", data


def pipe_eof(rfd: int, timeout: float) -> tuple[bool, bytes]:
    """Whether the pipe reaches EOF within timeout, and what it still sent."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, data
        r, _, _ = select.select([rfd], [], [], left)
        if r:
            chunk = os.read(rfd, 256)
            if not chunk:
                return True, data
            data += chunk


class DaemonFailed(AssertionError):
    pass


class Mount:
    """One artifactfs daemon in the foreground, mounted on self.mnt.

    With ALL_TENANTS, a tenant's daemon serves every tenant on daemon_mnt
    (a hidden sibling of mnt) and mnt is a bind mount of its tenant's
    directory there: what a sandbox given one tenant sees."""

    def __init__(self, store_root: Path, mnt: Path, client: str | None, options: list[str],
                 *, log_dir: Path, name: str, expect_errors=(), expect_warnings=(),
                 allow_warnings: bool = False, cmd_prefix=()):
        self.store_root = Path(store_root)
        self.mnt = Path(mnt)
        self.client = client
        self.options = [str(o) for o in options]
        # -o run= confines one tenant's promote/ to a run: single-tenant only.
        self.bound = ALL_TENANTS and client is not None and not any(
            part.startswith("run=") for o in self.options for part in o.split(","))
        self.daemon_mnt = (self.mnt.parent / f".{self.mnt.name}.all-tenants" if self.bound
                           else self.mnt)
        self.name = name
        self.stderr_path = Path(log_dir) / f"{name}.stderr"
        self.stdout_path = Path(log_dir) / f"{name}.stdout"
        self.expect_errors = list(expect_errors)
        self.expect_warnings = list(expect_warnings)
        self.allow_warnings = allow_warnings
        self.cmd_prefix = [str(c) for c in cmd_prefix]
        self.proc: subprocess.Popen | None = None
        self.rfd: int | None = None
        self.state = "new"          # new -> running -> stopped | killed -> stopped
        self.cmd: list[str] = []
        self.ready_data = b""

    def __truediv__(self, other) -> Path:
        return self.mnt / other

    def command(self, ready_fd: int) -> list[str]:
        cmd = [*self.cmd_prefix, str(BIN), "-f", "-o", f"ready_fd={ready_fd}"]
        if self.bound:
            cmd += ["-o", "all_tenants"]
        elif self.client is not None:
            cmd += ["-o", f"client={self.client}"]
        return cmd + TEST_OPTIONS + self.options + [str(self.store_root), str(self.daemon_mnt)]

    def start(self) -> "Mount":
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.daemon_mnt.mkdir(parents=True, exist_ok=True)
        r, w = os.pipe()
        self.cmd = self.command(w)
        with open(self.stderr_path, "ab") as err, open(self.stdout_path, "ab") as out:
            try:
                self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=err, pass_fds=(w,))
            finally:
                os.close(w)
        self.rfd = r
        self.state = "running"
        status, data = wait_ready(r, READY_TIMEOUT)
        self.ready_data = data
        if status != "ready":
            self._abort()
            raise DaemonFailed(
                f"artifactfs did not become ready ({status}; ready pipe got {data!r}); "
                f"exit status {self.proc.returncode}\ncommand: {self.cmd}\n"
                f"stderr:\n{self.stderr()}")
        if self.bound:
            r = bind_mount(self.daemon_mnt / self.client, self.mnt)
            if r.returncode != 0:
                self._abort()
                raise DaemonFailed(f"cannot bind {self.daemon_mnt / self.client} on "
                                   f"{self.mnt}: {r.stderr.strip()}\nstderr:\n{self.stderr()}")
        if not is_mounted(self.mnt):
            self._abort()
            raise DaemonFailed(f"artifactfs said ready but {self.mnt} is not in /proc/mounts\n"
                               f"stderr:\n{self.stderr()}")
        return self

    def _abort(self):
        """Brings everything down after a failed start (no checks)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        for mnt in self._mounts():
            if is_mounted(mnt):
                if fusermount_u(mnt).returncode != 0:
                    fusermount_u(mnt, lazy=True)
        self._close_pipe()
        self.state = "stopped"

    def _mounts(self) -> list[Path]:
        """What to unmount, in order: the bind first, then the daemon's own."""
        return [self.mnt, self.daemon_mnt] if self.bound else [self.mnt]

    def _unbind(self, lazy: bool = False) -> list[str]:
        """Unmounts the bind mount (ALL_TENANTS), returning what went wrong."""
        if not self.bound or not is_mounted(self.mnt):
            return []
        r = fusermount_u(self.mnt, lazy=lazy)
        if r.returncode == 0:
            return []
        fusermount_u(self.mnt, lazy=True)
        return [f"unmounting the bind mount {self.mnt} failed: {r.stderr.strip()}"]

    def _close_pipe(self):
        if self.rfd is not None:
            os.close(self.rfd)
            self.rfd = None

    # ---- the daemon's messages
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, level: str | None = None) -> list[str]:
        lines = []
        for line in self.stderr().splitlines():
            m = LOG_RE.match(line)
            if m and (level is None or m.group(1) == level):
                lines.append(line)
        return lines

    def log_problems(self) -> list[str]:
        problems = []
        for line in self.stderr().splitlines():
            if SANITIZER_RE.search(line):
                problems.append(f"sanitizer report: {line}")
                continue
            m = LOG_RE.match(line)
            if not m:
                continue
            if m.group(1) == "error" and not any(re.search(p, line) for p in self.expect_errors):
                problems.append(f"unexpected error line: {line}")
            if (m.group(1) == "warning" and not self.allow_warnings
                    and not any(re.search(p, line) for p in self.expect_warnings)):
                problems.append(f"unexpected warning line: {line}")
        return problems

    # ---- stopping
    def stop(self) -> list[str]:
        """Unmounts (always), waits for the daemon, and returns every problem
        seen: failed unmount, non-zero exit, unexpected log lines."""
        if self.state in ("new", "stopped"):
            return []
        problems = []
        if self.state == "running":
            if self.bound and not is_mounted(self.mnt):
                problems.append(f"{self.mnt} was no longer mounted at teardown")
            problems += self._unbind()
            if is_mounted(self.daemon_mnt):
                r = fusermount_u(self.daemon_mnt)
                if r.returncode != 0:
                    problems.append(f"fusermount3 -u {self.daemon_mnt} failed: "
                                    f"{r.stderr.strip()}")
                    fusermount_u(self.daemon_mnt, lazy=True)
            else:
                problems.append(f"{self.daemon_mnt} was no longer mounted at teardown")
            try:
                rc = self.proc.wait(EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"daemon still running {EXIT_TIMEOUT} s after unmount; killed")
                self.proc.kill()
                rc = self.proc.wait()
            if rc != 0:
                problems.append(f"daemon exited with status {rc}")
        for mnt in self._mounts():
            if is_mounted(mnt):
                problems.append(f"{mnt} still mounted after teardown; lazily unmounted")
                fusermount_u(mnt, lazy=True)
        self._close_pipe()
        problems += self.log_problems()
        self.state = "stopped"
        if problems:
            problems.append(f"command: {self.cmd}\nstderr:\n{self.stderr()}")
        return problems

    def unmount(self) -> None:
        """stop(), raising when anything went wrong."""
        problems = self.stop()
        if problems:
            raise DaemonFailed("\n".join(problems))

    def kill9(self) -> None:
        """kill -9 of the daemon, then fusermount3 -u of the dead mount."""
        self.sigkill()
        for mnt in self._mounts():
            r = fusermount_u(mnt)
            assert r.returncode == 0, f"fusermount3 -u {mnt} after kill -9 failed: {r.stderr}"
            assert not is_mounted(mnt)

    def sigkill(self) -> None:
        """kill -9 of the daemon only: the mount stays, dead (ENOTCONN),
        until unmount_dead()."""
        assert self.state == "running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(EXIT_TIMEOUT)
        self.state = "killed"

    def unmount_dead(self) -> str:
        """fusermount3 -u of a killed daemon's mount, lazily if a process
        still holds a file open on it.  Returns "clean" or "lazy"."""
        assert self.state == "killed"
        how = "clean"
        for mnt in self._mounts():
            if is_mounted(mnt):
                r = fusermount_u(mnt)
                if r.returncode != 0:
                    r = fusermount_u(mnt, lazy=True)
                    assert r.returncode == 0, f"fusermount3 -uz {mnt} failed: {r.stderr}"
                    how = "lazy"
            assert not is_mounted(mnt)
        return how


@pytest.fixture(scope="session", autouse=True)
def _session_guard(tmp_path_factory):
    """The binary must exist; at the end no mount may be left behind."""
    if not os.access(BIN, os.X_OK):
        pytest.fail(f"artifactfs binary not found at {BIN} "
                    f"(build it with meson/ninja or set ARTIFACTFS_BIN)", pytrace=False)
    base = str(tmp_path_factory.getbasetemp())
    yield
    for m in _ALL_MOUNTS:
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
    left = [mp for mp in fuse_mounts() if mp.startswith(base)]
    for mp in left:
        fusermount_u(mp, lazy=True)
    assert not left, f"mounts left behind at the end of the session: {left}"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "daemon_timeout(seconds): the mounter watchdog's limit for this test "
        "(default ARTIFACTFS_TEST_TIMEOUT, 60 s)")


@pytest.fixture
def mounter(tmp_path, request):
    """Factory: mounter(store, client, *options, mnt=, index=, expect_errors=,
    expect_warnings=, allow_warnings=, cmd_prefix=, start=) -> Mount.

    expect_errors / expect_warnings are regexes: a daemon line at that level
    that matches none of them fails the test at teardown (allow_warnings=True
    accepts every warning).  Every mount is unmounted at teardown, pass or
    fail, and the daemon must then exit 0.  A long test raises the
    watchdog's limit with @pytest.mark.daemon_timeout(seconds)."""
    marker = request.node.get_closest_marker("daemon_timeout")
    test_timeout = max(TEST_TIMEOUT, float(marker.args[0])) if marker else TEST_TIMEOUT
    mounts: list[Mount] = []
    counter = itertools.count()
    log_dir = tmp_path / "logs"
    log_dir.mkdir(exist_ok=True)
    hung = []

    def watchdog():
        for m in list(mounts):
            if m.proc is not None and m.proc.poll() is None:
                hung.append(m.name)
                m.proc.kill()

    timer = threading.Timer(test_timeout, watchdog)
    timer.daemon = True
    timer.start()

    def mount(store, client: str | None = ALICE, *options, mnt=None, index=None,
              expect_errors=(), expect_warnings=(), allow_warnings=False, cmd_prefix=(),
              start=True) -> Mount:
        n = next(counter)
        root = store.root if isinstance(store, Store) else Path(store)
        mnt = Path(mnt) if mnt is not None else tmp_path / f"mnt{n}"
        opts = list(options)
        if index is not None:
            opts += ["-o", f"index={index}"]
        m = Mount(root, mnt, client, opts, log_dir=log_dir, name=f"daemon{n}",
                  expect_errors=expect_errors, expect_warnings=expect_warnings,
                  allow_warnings=allow_warnings, cmd_prefix=cmd_prefix)
        mounts.append(m)
        _ALL_MOUNTS.append(m)
        if start:
            m.start()
        return m

    yield mount

    timer.cancel()
    problems = [f"[{name}] test still running after {test_timeout} s: daemon killed "
                f"(hung request?)" for name in hung]
    for m in reversed(mounts):
        try:
            problems += [f"[{m.name}] {p}" for p in m.stop()]
        except Exception as e:  # keep tearing the others down
            problems.append(f"[{m.name}] teardown raised {e!r}")
    if problems:
        pytest.fail("daemon problems at teardown:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture
def store(tmp_path) -> Store:
    return build_default_store(tmp_path / "store")


@pytest.fixture
def alice(store, mounter) -> Mount:
    return mounter(store, ALICE)


@pytest.fixture(scope="session")
def backup_world(tmp_path_factory):
    """The large three-tenant store of test_backup.py and test_unix_tools.py
    (about 50 runs and 2,000 files, a 200 MB file, sparse files, a
    10,000-file run), built once per session: see backup_store.py."""
    from backup_store import build_world
    return build_world(tmp_path_factory.mktemp("backup-world"))
