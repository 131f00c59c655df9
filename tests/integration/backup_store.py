"""The large store of test_backup.py and test_unix_tools.py, built once per
session (conftest's ``backup_world`` fixture), and the helpers both use.

Three tenants, 50 run directories, about 2,000 files (plus a 10,000-file
run), in the kernel-server's layout and metadata.json format:

* ``acme`` (read only: never changed by a test): 30 runs, one of them
  expired (hidden), about 1,350 files.  The showcase run holds a 200 MB
  file, a sparse file (256 MiB apparent, a few KiB of data), a SQLite
  database, empty and 1-byte files, a file metadata.json does not list,
  names with spaces, quotes, backslashes and UTF-8.  Things the view hides
  are planted too (a symlink, a subdirectory, a FIFO, a file in the tenant
  dir, a run dir with an invalid name): backups of the mount must not
  contain them.  Every file and run dir has its own mtime, with nanoseconds.
* ``globex``: 15 runs, about 500 files.  The incremental-backup tests
  promote into it (one new file per test).
* ``initech``: the churn tenant: a run of 10,000 files, a run with a sparse
  file over 4 GiB, and small runs that tests add, rewrite and remove.

Expected values (sizes, SHA-256, mtimes, xattrs) are computed from the
backing store, the source of truth, never from a mount.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import stat
import subprocess
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import (
    FILE_XATTRS, RUN_XATTRS, XATTR_PREFIX, File, Store, expected_files, expected_runs,
    make_metadata, serde_pretty, sha256_file, write_through,
)

ACME, GLOBEX, INITECH = "acme", "globex", "initech"
TENANTS = (ACME, GLOBEX, INITECH)

MIB = 1 << 20
GIB = 1 << 30
BIG_SIZE = 200 * 1000 * 1000            # "a 200 MB file"
SPARSE_SIZE = 256 * MIB
HUGE_SIZE = 4 * GIB + 64 * MIB          # copy_file_range past 4 GiB
BIGDIR_FILES = 10_000

SHOWCASE_RUN = "3f0c9a8e-1d2b-4c5a-8e7f-60a1b2c3d4e5"
BIG_NAME = "model weights.bin"
SPARSE_NAME = "disk image.sparse"
DB_NAME = "results.db"
UNLISTED_NAME = "not-in-metadata.txt"
EXPIRED_RUN = "e0e0e0e0-dead-4bad-8bad-0123456789ab"
BIGDIR_RUN = "bigdir-10000"
HUGE_RUN = "huge-sparse-run"
HUGE_NAME = "volume.raw"
# special file names of the showcase run, with their bytes
SPECIAL_NAMES = {
    "with space.txt": b"a name with a space\n",
    "  two leading spaces.txt": b"leading spaces\n",
    "trailing space .txt": b"trailing space\n",
    "it's a quote.txt": b"single quote\n",
    'say "hi".txt': b"double quotes\n",
    "back\\slash.txt": b"backslash\n",
    "-leading-dash.txt": b"leading dash\n",
    "$HOME and *.txt": b"shell characters\n",
    "ünïcødé-名前.csv": "col,值\n1,二\n".encode(),
    "emoji 📦 box.md": "# 📦\n".encode(),
    "Ωmega—dash.json": '{"ω": 1}\n'.encode(),
    "empty.txt": b"",
    "empty.bin": b"",
    "one-byte.bin": b"\x00",
    "one.txt": b"x",
}
# (offset, bytes) of the data in the sparse files; everything else is a hole
SPARSE_DATA = [(0, b"SPARSE-HEAD" * 300), (64 * MIB + 123, b"middle-marker"),
               (200 * MIB, bytes(range(256)) * 256), (SPARSE_SIZE - 7, b"THE-END")]
HUGE_DATA = [(0, b"HUGE-HEAD"), (4 * GIB - 4096 - 5, b"just-below-4-GiB" * 512),
             (4 * GIB + 12345, b"past-4-GiB-marker"),
             (4 * GIB + 32 * MIB, bytes(range(256)) * 4096),     # 1 MiB of data
             (HUGE_SIZE - 9, b"HUGE-TAIL")]
NEEDLE = "NEEDLE-7c3f"


def run_id(rnd: random.Random) -> str:
    return str(uuid.UUID(int=rnd.getrandbits(128), version=4))


def content_for(rnd: random.Random, name: str, size: int, needle: str | None) -> bytes:
    """Text for text-like names (lines, a needle maybe), else random bytes."""
    if size == 0:
        return b""
    if name.endswith((".txt", ".md", ".csv", ".json", ".log")):
        words = [b"alpha", b"beta", b"gamma", b"delta", b"epsilon", b"42", b"3.14"]
        out = bytearray()
        if needle:
            out += f"{needle} line\n".encode()
        while len(out) < size:
            out += b" ".join(rnd.choice(words) for _ in range(rnd.randrange(1, 12))) + b"\n"
        return bytes(out[:size])
    return rnd.randbytes(size)


def pick_size(rnd: random.Random) -> int:
    r = rnd.random()
    if r < 0.05:
        return 0
    if r < 0.10:
        return 1
    if r < 0.80:
        return rnd.randrange(2, 6000)
    if r < 0.97:
        return rnd.randrange(6000, 120_000)
    return rnd.randrange(120_000, 600_000)


EXTS = [".txt", ".csv", ".md", ".json", ".png", ".bin", ".log", ".parquet"]


def write_sparse(path: Path, size: int, data: list[tuple[int, bytes]]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, chunk in data:
            os.pwrite(fd, chunk, off)
    finally:
        os.close(fd)


def write_big(path: Path, size: int, seed: int) -> str:
    """size bytes of pseudo-random data, each 4 KiB block stamped with its
    offset (a misplaced block cannot go unnoticed); returns the SHA-256."""
    rnd = random.Random(seed)
    h = hashlib.sha256()
    block = 4 * MIB
    with open(path, "wb") as f:
        off = 0
        while off < size:
            n = min(block, size - off)
            chunk = bytearray(rnd.randbytes(n))
            for o in range(0, n, 4096):
                chunk[o:o + 8] = (off + o).to_bytes(8, "little")
            f.write(chunk)
            h.update(chunk)
            off += n
    return h.hexdigest()


def write_db(path: Path, rows: int) -> None:
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=DELETE")
    con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
    con.executemany("INSERT INTO results VALUES (?, ?, ?)",
                    [(i, f"case-{i}", i * 0.5) for i in range(rows)])
    con.commit()
    con.close()


@dataclass
class World:
    """The session store and what tests need to know about it."""
    store: Store
    hashes: dict = field(default_factory=dict)      # backing path -> sha256 (immutable files)
    runs: dict = field(default_factory=dict)        # tenant -> [run ids made]
    db_rows: int = 0

    @property
    def root(self) -> Path:
        return self.store.root

    def tenant_dir(self, tenant: str) -> Path:
        return self.store.client_dir(tenant)

    def sha256(self, path: Path) -> str:
        """SHA-256 of a backing file (cached for acme, which never changes)."""
        path = Path(path)
        if ACME in path.parts:
            if str(path) not in self.hashes:
                self.hashes[str(path)] = sha256_file(path)
            return self.hashes[str(path)]
        return sha256_file(path)


def expected_xattrs(run_dir: Path) -> tuple[dict, dict]:
    """(run xattrs, {file: xattrs}) the view shows, from metadata.json."""
    try:
        meta = json.loads((run_dir / "metadata.json").read_bytes())
    except (OSError, ValueError):
        return {}, {}
    run = {XATTR_PREFIX + k: meta[k].encode() for k in RUN_XATTRS
           if isinstance(meta.get(k), str)}
    files = {}
    for a in meta.get("artifacts", []):
        files[a["filename"]] = {XATTR_PREFIX + k: str(a[k]).encode() for k in FILE_XATTRS
                                if k in a}
    return run, files


def expected_tree(world: World, tenant: str, with_data: bool = True) -> dict:
    """What a faithful copy of the tenant's view holds, from the backing
    store: relpath -> dict(type, mtime_ns, xattrs, size, sha256, blocks)."""
    tdir = world.tenant_dir(tenant)
    out = {}
    for run in expected_runs(world.store, tenant):
        rdir = tdir / run
        run_x, file_x = expected_xattrs(rdir)
        st = os.stat(rdir)
        out[run] = {"type": "d", "mtime_ns": st.st_mtime_ns, "xattrs": run_x}
        for name in expected_files(rdir):
            st = os.stat(rdir / name)
            xattrs = dict(file_x.get(name, {})) if name != "metadata.json" else {}
            sealed = sealed_sha256(rdir / name, st)
            if sealed and name != "metadata.json":
                xattrs[XATTR_PREFIX + "sha256"] = sealed
            out[f"{run}/{name}"] = {
                "type": "f", "mtime_ns": st.st_mtime_ns, "size": st.st_size,
                "blocks": st.st_blocks, "xattrs": xattrs,
                "sha256": world.sha256(rdir / name) if with_data else None,
            }
    return out


def sealed_sha256(path: Path, st: os.stat_result) -> bytes | None:
    """The SHA-256 a promoted file's seal (the xattr user.artifactfs.landing,
    include/seal.h) gives it in every view, whichever host's index: while
    the file's size and mtime are still the sealed ones."""
    try:
        seal = json.loads(os.getxattr(path, "user.artifactfs.landing"))
    except (OSError, ValueError):
        return None
    if seal.get("size") != st.st_size or seal.get("mtime_ns") != st.st_mtime_ns:
        return None
    return seal["sha256"].encode()


def visible_files(world: World, tenant: str) -> list[str]:
    """run/name of every file the tenant's view shows, sorted."""
    tdir = world.tenant_dir(tenant)
    return sorted(f"{run}/{name}" for run in expected_runs(world.store, tenant)
                  for name in expected_files(tdir / run))


def _add_run(store: Store, tenant: str, rid: str, files: dict, *, created: datetime,
             rnd: random.Random, unlisted=(), workflow_id=None, directive="") -> Path:
    """Writes a run: files (name -> bytes, or (size, writer) for big ones),
    metadata.json listing all but `unlisted`, then distinct mtimes with
    nanoseconds (files first, the run dir last)."""
    rdir = store.run_dir(tenant, rid)
    rdir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name, spec in files.items():
        if isinstance(spec, (bytes, bytearray)):
            write_through(rdir / name, spec)
            sizes[name] = len(spec)
        else:
            size, writer = spec
            writer(rdir / name)
            sizes[name] = size
    listed = {n: File(b"", hole=s) for n, s in sizes.items() if n not in unlisted}
    meta = make_metadata(rid, listed, workflow_id=workflow_id or f"wf-{tenant}-{rid[:8]}",
                         user_directive=directive, created=created, agent=f"{tenant}-agent")
    write_through(rdir / "metadata.json", serde_pretty(meta))
    base = int(created.timestamp()) * 10**9
    for i, name in enumerate(sorted(sizes) + ["metadata.json"]):
        mt = base + (i + 1) * 1_000_000_000 + rnd.randrange(1, 10**9)
        os.utime(rdir / name, ns=(mt, mt))
    dir_mt = base + (len(sizes) + 5) * 10**9 + rnd.randrange(1, 10**9)
    os.utime(rdir, ns=(dir_mt, dir_mt))
    return rdir


def build_world(root: Path) -> World:
    rnd = random.Random(0xBAC0)
    store = Store(root / "store")
    world = World(store=store)
    now = datetime.now(timezone.utc).replace(microsecond=0)

    # ---------------------------------------------------------------- acme
    runs = []
    created = now - timedelta(days=5)
    showcase = dict(SPECIAL_NAMES)
    showcase[UNLISTED_NAME] = f"{NEEDLE} unlisted\n".encode()
    showcase["notes.md"] = f"# Notes\n{NEEDLE} in the showcase\n".encode()
    showcase["table.csv"] = b"".join(f"{i},{i * i}\n".encode() for i in range(5000))
    big_path = store.run_dir(ACME, SHOWCASE_RUN) / BIG_NAME

    def big_writer(p):
        world.hashes[str(p)] = write_big(p, BIG_SIZE, seed=1)

    showcase[BIG_NAME] = (BIG_SIZE, big_writer)
    showcase[SPARSE_NAME] = (SPARSE_SIZE, lambda p: write_sparse(p, SPARSE_SIZE, SPARSE_DATA))
    # the database's size is known only once written: it is written first
    world.db_rows = 2000
    store.run_dir(ACME, SHOWCASE_RUN).mkdir(parents=True)
    write_db(store.run_dir(ACME, SHOWCASE_RUN) / DB_NAME, world.db_rows)
    showcase[DB_NAME] = (os.path.getsize(store.run_dir(ACME, SHOWCASE_RUN) / DB_NAME),
                         lambda p: None)
    _add_run(store, ACME, SHOWCASE_RUN, showcase, created=created, rnd=rnd,
             unlisted=(UNLISTED_NAME,), workflow_id="wf-acme-showcase",
             directive='Back up "everything" — ünïcødé 👍')
    assert big_path.stat().st_size == BIG_SIZE
    runs.append(SHOWCASE_RUN)
    for r in range(28):
        rid = run_id(rnd)
        files = {}
        for i in range(rnd.randrange(38, 56)):
            name = f"{['report', 'data', 'plot', 'log', 'table', 'out'][i % 6]}-{i:03d}" \
                   f"{EXTS[rnd.randrange(len(EXTS))]}"
            size = pick_size(rnd)
            files[name] = content_for(rnd, name, size,
                                      f"{NEEDLE}-{r}-{i}" if rnd.random() < 0.05 else None)
        _add_run(store, ACME, rid, files, created=now - timedelta(days=1, hours=r * 3), rnd=rnd,
                 directive=f"directive of run {r}" if r % 3 else "")
        runs.append(rid)
    # an expired run: hidden from the view, so from every backup of it
    _add_run(store, ACME, EXPIRED_RUN, {"expired.txt": b"expired\n"},
             created=now - timedelta(days=30), rnd=rnd)
    # planted things the view hides
    tdir = store.client_dir(ACME)
    hide_in = tdir / runs[1]
    os.symlink("/etc/passwd", hide_in / "link-to-passwd")
    (hide_in / "subdir").mkdir()
    (hide_in / "subdir" / "inner.txt").write_bytes(b"inner, hidden\n")
    os.mkfifo(hide_in / "a-fifo")
    (tdir / "stray-file.txt").write_bytes(b"not a run\n")
    (tdir / "not a valid run id").mkdir()
    (tdir / "not a valid run id" / "x.txt").write_bytes(b"hidden run\n")
    # the planting changed the run dir's mtime: give it its own again
    mt = int((now - timedelta(days=4)).timestamp()) * 10**9 + 123456789
    os.utime(hide_in, ns=(mt, mt))
    world.runs[ACME] = runs

    # ---------------------------------------------------------------- globex
    runs = []
    for r in range(15):
        rid = run_id(rnd)
        files = {}
        for i in range(rnd.randrange(25, 40)):
            name = f"artifact-{i:03d}{EXTS[rnd.randrange(len(EXTS))]}"
            files[name] = content_for(rnd, name, pick_size(rnd), None)
        if r == 0:
            files["medium.bin"] = rnd.randbytes(8 * MIB + 17)
            files["zero.txt"] = b""
            files["a.txt"] = b"a"
        _add_run(store, GLOBEX, rid, files, created=now - timedelta(days=3, hours=r), rnd=rnd)
        runs.append(rid)
    world.runs[GLOBEX] = runs

    # ---------------------------------------------------------------- initech
    runs = []
    bigdir = {f"entry-{i:05d}.txt": f"{i}\n".encode() for i in range(BIGDIR_FILES)}
    _add_run(store, INITECH, BIGDIR_RUN, bigdir, created=now - timedelta(days=2), rnd=rnd)
    runs.append(BIGDIR_RUN)
    _add_run(store, INITECH, HUGE_RUN,
             {HUGE_NAME: (HUGE_SIZE, lambda p: write_sparse(p, HUGE_SIZE, HUGE_DATA))},
             created=now - timedelta(days=2), rnd=rnd)
    runs.append(HUGE_RUN)
    for r in range(3):
        rid = f"churn-base-{r}"
        _add_run(store, INITECH, rid, {f"f{i}.txt": f"{r}-{i}\n".encode() for i in range(20)},
                 created=now - timedelta(days=1), rnd=rnd)
        runs.append(rid)
    world.runs[INITECH] = runs
    return world


def is_sparse_name(rel: str) -> bool:
    return rel.endswith(SPARSE_NAME)


def tree_of(root: Path) -> dict:
    """relpath -> os.lstat result of everything below root (root itself not
    included)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[os.path.relpath(p, root)] = os.lstat(p)
    return out


def restored_xattrs(path: Path) -> dict:
    return {n: os.getxattr(path, n, follow_symlinks=False)
            for n in os.listxattr(path, follow_symlinks=False) if n.startswith(XATTR_PREFIX)}


def compare_restore(world: World, tenant: str, restored: Path, *, mtime_res_ns: int = 1,
                    dir_mtime_res_ns: int | None = None, check_xattrs: bool = True,
                    sparse: bool = False) -> list[str]:
    """Differences between a restored copy of a tenant mount and the backing
    store: names (nothing missing, nothing extra: hidden things must not
    appear), types, bytes, sizes, mtimes (to mtime_res_ns; directories to
    dir_mtime_res_ns, by default the same), user.artifact.* xattrs; with
    sparse, the sparse file must still have holes."""
    dir_res = dir_mtime_res_ns or mtime_res_ns
    problems = []
    expected = expected_tree(world, tenant)
    got = tree_of(restored)
    if set(got) != set(expected):
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        problems.append(f"names differ: missing {missing[:10]} ({len(missing)}), "
                        f"extra {extra[:10]} ({len(extra)})")
    for rel, exp in sorted(expected.items()):
        st = got.get(rel)
        if st is None:
            continue
        p = restored / rel
        if exp["type"] == "d":
            if not stat.S_ISDIR(st.st_mode):
                problems.append(f"{rel}: not a directory")
                continue
            if st.st_mtime_ns // dir_res != exp["mtime_ns"] // dir_res:
                problems.append(f"{rel}: dir mtime {st.st_mtime_ns} != {exp['mtime_ns']}")
        else:
            if not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel}: not a regular file")
                continue
            if st.st_size != exp["size"]:
                problems.append(f"{rel}: size {st.st_size} != {exp['size']}")
            elif sha256_file(p) != exp["sha256"]:
                problems.append(f"{rel}: bytes differ")
            if st.st_mtime_ns // mtime_res_ns != exp["mtime_ns"] // mtime_res_ns:
                problems.append(f"{rel}: mtime {st.st_mtime_ns} != {exp['mtime_ns']}")
            if sparse and is_sparse_name(rel) and st.st_blocks * 512 >= st.st_size // 2:
                problems.append(f"{rel}: restored without holes ({st.st_blocks} blocks)")
        if check_xattrs:
            have = restored_xattrs(p)
            if have != exp["xattrs"]:
                problems.append(f"{rel}: xattrs {have} != {exp['xattrs']}")
    return problems


# --------------------------------------------------------------------------
# The daemon's read counters, and mounts for backups
# --------------------------------------------------------------------------


def stats_delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k]
            for k in ("opens", "reads", "read_bytes", "passthrough_opens")}


def mount_ro(mounter, world: World, tenant: str, tmp_path: Path, **kw):
    """The tenant mounted as a backup job should: -o ro (no promote/), with
    an index of the test's own (tmp_path/index.db) unless index= says."""
    kw.setdefault("index", tmp_path / "index.db")
    return mounter(world.store, tenant, "-o", "ro", **kw)


UTF8_ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


def run_tool(args, *, cwd=None, env=None, timeout=180, ok=(0,)) -> subprocess.CompletedProcess:
    """Runs a command (text output, UTF-8 locale); AssertionError with its
    output when the exit status is not in ok."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                       env=env or UTF8_ENV, timeout=timeout, errors="surrogateescape",
                       stdin=subprocess.DEVNULL)
    if r.returncode not in ok:
        raise AssertionError(f"{' '.join(map(str, args))} exited {r.returncode}\n"
                             f"stdout:\n{r.stdout[-4000:]}\nstderr:\n{r.stderr[-4000:]}")
    return r
