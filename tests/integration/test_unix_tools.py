"""Standard Unix tools on a tenant mount of the session's large store
(backup_store.py) get exactly what the backing store holds.

find (-newer, -size, -links, -inum, and its leaf optimisation), du (-s,
--apparent-size), ls -lR, stat, getfattr, grep -r, wc, sha256sum -c,
sqlite3 with immutable=1, dd with O_DIRECT, Python's mmap, O_DIRECT and
O_NOATIME opens, readdir in small batches of a 10,000-file run while the
store changes, copy_file_range past 4 GiB, out-of-band rewrites, df.

Expected values come from the backing store (os.stat and the bytes of the
backing files), or from the same tool run on the backing directory.  The
acme tenant is never changed; initech is the tenant tests change."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import mmap
import os
import random
import re
import shutil
import stat
import struct
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from conftest import DT_DIR, DT_REG, daemon_stats, raw_readdir, wait_until
from backup_store import (
    ACME, BIG_NAME, BIG_SIZE, BIGDIR_FILES, BIGDIR_RUN, DB_NAME, GIB, HUGE_DATA, HUGE_NAME,
    HUGE_RUN, HUGE_SIZE, INITECH, MIB, NEEDLE, SHOWCASE_RUN, SPARSE_DATA, SPARSE_NAME,
    SPARSE_SIZE, UTF8_ENV, expected_tree, mount_ro, run_tool, stats_delta,
    visible_files,
)

pytestmark = pytest.mark.daemon_timeout(180)

UTC_ENV = {**UTF8_ENV, "TZ": "UTC"}


@pytest.fixture
def acme(backup_world, mounter, tmp_path):
    """acme mounted as a backup job or a person browsing would: -o ro."""
    return mount_ro(mounter, backup_world, ACME, tmp_path)


@pytest.fixture
def initech_dir(backup_world) -> Path:
    return backup_world.tenant_dir(INITECH)


def expected(world, tenant=ACME) -> dict:
    """relpath -> expected entry (backing store), without hashing."""
    return expected_tree(world, tenant, with_data=False)


def lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line]


# --------------------------------------------------------------------------
# find
# --------------------------------------------------------------------------

def find(mnt, *args) -> list[str]:
    """find MNT -mindepth 1 ARGS -printf '%P\\n' (relpaths, sorted)."""
    r = run_tool(["find", mnt, "-mindepth", "1", *args, "-printf", r"%P\n"])
    return sorted(lines(r.stdout))


def test_find_walks_exactly_the_view_with_and_without_leaf_optimisation(backup_world, acme):
    """find skips stat()ing entries of a directory once it has seen
    st_nlink - 2 subdirectories: a wrong directory link count makes it miss
    or mistype entries.  Both walks must give the view exactly."""
    exp = expected(backup_world)
    want = sorted(f"{e['type']} {rel}" for rel, e in exp.items())
    for leaf in ([], ["-noleaf"]):
        r = run_tool(["find", acme.mnt, *leaf, "-mindepth", "1", "-printf", r"%y %P\n"])
        assert sorted(lines(r.stdout)) == want, f"find {leaf}"
    # the link counts that optimisation trusts
    runs = [rel for rel, e in exp.items() if e["type"] == "d"]
    assert os.stat(acme.mnt).st_nlink == 2 + len(runs)
    for run in runs:
        assert os.stat(acme.mnt / run).st_nlink == 2, run


def test_find_newer_selects_by_backing_mtimes(backup_world, acme):
    exp = expected(backup_world)
    files = sorted((e["mtime_ns"], rel) for rel, e in exp.items() if e["type"] == "f")
    for ref_mtime, ref in (files[len(files) // 2], files[len(files) // 5]):
        got = find(acme.mnt, "-newer", acme.mnt / ref)
        want = sorted(rel for rel, e in exp.items() if e["mtime_ns"] > ref_mtime)
        assert got == want, f"-newer {ref}"
        assert 50 < len(want) < len(exp)


def find_size_matches(size: int, spec: str) -> bool:
    """find's -size test: sizes rounded up to the unit, then compared."""
    m = re.fullmatch(r"([+-]?)(\d+)([ckMG])", spec)
    sign, n, unit = m.group(1), int(m.group(2)), m.group(3)
    u = {"c": 1, "k": 1024, "M": MIB, "G": GIB}[unit]
    units = -(-size // u)
    return units > n if sign == "+" else units < n if sign == "-" else units == n


@pytest.mark.parametrize("spec", ["+1M", "+100k", "-2c", "1c", "0c", "-3k"])
def test_find_size(backup_world, acme, spec):
    exp = expected(backup_world)
    got = find(acme.mnt, "-type", "f", "-size", spec)
    want = sorted(rel for rel, e in exp.items()
                  if e["type"] == "f" and find_size_matches(e["size"], spec))
    assert got == want
    assert want, f"the store has no file for -size {spec}"


def test_find_empty_lists_the_empty_files(backup_world, acme):
    exp = expected(backup_world)
    want = sorted(rel for rel, e in exp.items() if e["type"] == "f" and e["size"] == 0)
    assert find(acme.mnt, "-type", "f", "-empty") == want and len(want) > 10


def test_find_links(backup_world, acme):
    exp = expected(backup_world)
    files = sorted(rel for rel, e in exp.items() if e["type"] == "f")
    runs = sorted(rel for rel, e in exp.items() if e["type"] == "d")
    assert find(acme.mnt, "-type", "f", "-links", "1") == files
    assert find(acme.mnt, "-links", "+2") == []
    assert find(acme.mnt, "-type", "d", "-links", "2") == runs
    r = run_tool(["find", acme.mnt, "-maxdepth", "0", "-links", str(2 + len(runs))])
    assert lines(r.stdout) == [str(acme.mnt)]


def test_find_inum_finds_backing_inode_numbers(backup_world, acme):
    exp = expected(backup_world)
    rnd = random.Random(5)
    picks = [f"{SHOWCASE_RUN}/{n}" for n in (BIG_NAME, SPARSE_NAME, "it's a quote.txt",
                                              "ünïcødé-名前.csv", "back\\slash.txt")]
    picks += rnd.sample(sorted(r for r, e in exp.items() if e["type"] == "f"), 5)
    for rel in picks:
        ino = backup_world.store.shown_ino(backup_world.tenant_dir(ACME) / rel)
        assert find(acme.mnt, "-inum", str(ino)) == [rel]
    run = rnd.choice(sorted(r for r, e in exp.items() if e["type"] == "d"))
    assert find(acme.mnt, "-inum", str(backup_world.store.shown_ino(backup_world.tenant_dir(ACME) / run))) \
        == [run]


def test_readdir_d_ino_and_d_type_of_every_entry(backup_world, acme):
    """d_ino 0 or DT_UNKNOWN make tools stat or skip entries."""
    tdir = backup_world.tenant_dir(ACME)
    exp = expected(backup_world)
    root = raw_readdir(acme.mnt)
    assert root == {rel: (backup_world.store.shown_ino(tdir / rel), DT_DIR)
                    for rel, e in exp.items() if e["type"] == "d"}
    for run in root:
        listed = raw_readdir(acme.mnt / run)
        assert listed == {rel.split("/", 1)[1]: (backup_world.store.shown_ino(tdir / rel), DT_REG)
                          for rel, e in exp.items() if rel.startswith(run + "/")}, run


# --------------------------------------------------------------------------
# du, ls, stat
# --------------------------------------------------------------------------

def du_bytes(path, *opts) -> int:
    return int(run_tool(["du", "-s", "-B1", *opts, path]).stdout.split()[0])


def test_du_of_each_run_equals_du_of_its_backing_dir(backup_world, acme):
    tdir = backup_world.tenant_dir(ACME)
    runs = sorted(r for r, e in expected(backup_world).items() if e["type"] == "d")
    compared = 0
    for run in runs:
        if any(not stat.S_ISREG(os.lstat(tdir / run / n).st_mode) for n in os.listdir(tdir / run)):
            continue    # holds things the view hides: the whole-tenant test covers it
        for opts in ((), ("--apparent-size",)):
            assert du_bytes(acme.mnt / run, *opts) == du_bytes(tdir / run, *opts), (run, opts)
        compared += 1
    assert compared >= len(runs) - 1


def test_du_of_the_mount_equals_the_backing_tenant_dir(backup_world, acme):
    """du -s and du -s --apparent-size of the mount: the tenant dir's own
    blocks and size, plus those of the runs and files it shows."""
    tdir = backup_world.tenant_dir(ACME)
    exp = expected(backup_world)
    entries = {".": tdir, **{rel: tdir / rel for rel in exp}}
    want_blocks = sum(os.lstat(p).st_blocks * 512 for p in entries.values())
    want_size = sum(os.lstat(p).st_size for p in entries.values())
    got_blocks, got_size = du_bytes(acme.mnt), du_bytes(acme.mnt, "--apparent-size")
    if (got_blocks, got_size) != (want_blocks, want_size):
        diffs = []
        for rel, p in entries.items():
            b, v = os.lstat(p), os.lstat(acme.mnt / rel)
            if (v.st_blocks, v.st_size) != (b.st_blocks, b.st_size):
                diffs.append(f"{rel}: mount (size {v.st_size}, blocks {v.st_blocks}) != "
                             f"backing (size {b.st_size}, blocks {b.st_blocks})")
        pytest.fail(f"du -s {got_blocks} (want {want_blocks}), --apparent-size {got_size} "
                    f"(want {want_size}); entries that differ:\n" + "\n".join(diffs[:20]))


def full_iso(ns: int) -> str:
    when = datetime.fromtimestamp(ns // 10**9, timezone.utc)
    return f"{when:%Y-%m-%d %H:%M:%S}.{ns % 10**9:09d} +0000"


LS_LINE = re.compile(r"(\S+) +(\d+) +\d+ +\d+ +(\d+) "
                     r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{9} [+-]\d{4}) (.*)$")


def test_ls_lR_shows_every_entry_with_backing_size_and_mtime(backup_world, acme):
    tdir = backup_world.tenant_dir(ACME)
    exp = expected(backup_world)
    r = run_tool(["ls", "-lR", "-n", "--time-style=full-iso", acme.mnt], env=UTC_ENV)
    sections, cur = {}, None
    for line in r.stdout.split("\n"):
        if not line:
            continue
        if line.endswith(":") and line[:-1].startswith(str(acme.mnt)):
            cur = os.path.relpath(line[:-1], acme.mnt)
            sections[cur] = {"entries": {}}
        elif line.startswith("total "):
            sections[cur]["total"] = int(line.split()[1])
        else:
            m = LS_LINE.match(line)
            assert m, f"ls -l line not understood: {line!r}"
            perms, nlink, size, when, name = m.groups()
            sections[cur]["entries"][name] = (perms, int(nlink), int(size), when)
    dirs = ["."] + sorted(rel for rel, e in exp.items() if e["type"] == "d")
    assert sorted(sections) == dirs
    for d in dirs:
        children = {rel.rsplit("/", 1)[-1]: e for rel, e in exp.items()
                    if os.path.dirname(rel) == ("" if d == "." else d)}
        got = sections[d]["entries"]
        assert sorted(got) == sorted(children), d
        total_kib = 0
        for name, e in children.items():
            perms, nlink, size, when = got[name]
            b = os.lstat(tdir / (name if d == "." else f"{d}/{name}"))
            assert perms[0] == e["type"].replace("f", "-"), (d, name)
            assert nlink == (2 if e["type"] == "d" else 1), (d, name)
            assert size == b.st_size, (d, name)
            assert when == full_iso(b.st_mtime_ns), (d, name)
            total_kib += -(-b.st_blocks // 2)
        assert sections[d]["total"] == total_kib, d


STAT_FORMAT = "%s|%b|%B|%i|%Y|%y|%Z|%z|%F\n"


def test_stat_command_shows_backing_fields(backup_world, acme):
    """stat(1) on every entry of the mount and of the backing store: size,
    blocks, mtime and ctime, type are the same, the inode number is the
    backing one as the store's key shows it (mode and owner are the view's
    own; link counts: test_find_links)."""
    exp = expected(backup_world)
    rels = sorted(exp)
    tdir = backup_world.tenant_dir(ACME)
    got = run_tool(["stat", "--printf", STAT_FORMAT, *rels], cwd=acme.mnt, env=UTC_ENV).stdout
    want = run_tool(["stat", "--printf", STAT_FORMAT, *rels], cwd=tdir, env=UTC_ENV).stdout
    got, want = got.split("\n"), want.split("\n")
    assert len(got) == len(rels) + 1
    for i, rel in enumerate(rels):
        fields = want[i].split("|")
        fields[3] = str(backup_world.store.shown_ino(tdir / rel))
        want[i] = "|".join(fields)
    bad = [f"{rel}: mount {g!r} != backing {w!r}" for rel, g, w in zip(rels, got, want) if g != w]
    assert not bad, "\n".join(bad[:20])


def decode_getfattr(s: str) -> str:
    """getfattr's file names: special bytes as octal escapes (\\134)."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]),
                 s.encode("utf-8", "surrogateescape"))
    return raw.decode("utf-8", "surrogateescape")


def test_getfattr_dump_equals_metadata_json(backup_world, acme):
    exp = expected(backup_world)
    r = run_tool(["getfattr", "-R", "-d", "-e", "hex", "-m", r"^user\.artifact\.", "."],
                 cwd=acme.mnt)
    got, cur = {}, None
    for line in r.stdout.split("\n"):
        if line.startswith("# file: "):
            cur = decode_getfattr(line[len("# file: "):])
            cur = cur[2:] if cur.startswith("./") else cur
            got[cur] = {}
        elif "=" in line:
            name, value = line.split("=", 1)
            got[cur][name] = bytes.fromhex(value[2:]) if value != "0x" else b""
        elif line.strip() and not line.startswith("#"):
            got[cur][line.strip()] = b""      # an empty value is printed bare
    want = {rel: e["xattrs"] for rel, e in exp.items() if e["xattrs"]}
    assert got == want


# --------------------------------------------------------------------------
# Reading tools
# --------------------------------------------------------------------------

def test_grep_r_finds_exactly_the_backing_matches(backup_world, acme):
    exp = expected(backup_world)
    tdir = backup_world.tenant_dir(ACME)
    want = sorted(rel for rel, e in exp.items()
                  if e["type"] == "f" and 0 < e["size"] < 10 * MIB
                  and NEEDLE.encode() in (tdir / rel).read_bytes())
    r = run_tool(["grep", "-r", "-l", "-F", NEEDLE, "."], cwd=acme.mnt)
    assert sorted(p[2:] for p in lines(r.stdout)) == want and len(want) > 5
    # counting matching lines, text files only
    r = run_tool(["grep", "-r", "-c", "-F", "--include=*.md", "--include=*.txt", NEEDLE, "."],
                 cwd=acme.mnt)
    got = dict(line[2:].rsplit(":", 1) for line in lines(r.stdout))
    want = {rel: str(sum(NEEDLE.encode() in line
                         for line in (tdir / rel).read_bytes().split(b"\n")))
            for rel, e in exp.items() if e["type"] == "f" and rel.endswith((".md", ".txt"))}
    assert got == want


def test_wc_counts_equal_those_of_the_backing_files(backup_world, acme):
    """wc -c (from st_size) and wc -l (reading) of every file, wc -lwm of
    the text files: the same output on the mount and on the backing dir."""
    rels = visible_files(backup_world, ACME)
    text = [rel for rel in rels if rel.endswith((".txt", ".md", ".csv", ".json"))]
    tdir = backup_world.tenant_dir(ACME)
    for opts, which in ((["-c"], rels), (["-l"], rels), (["-l", "-w", "-m"], text)):
        got = run_tool(["wc", *opts, "--", *which], cwd=acme.mnt).stdout
        want = run_tool(["wc", *opts, "--", *which], cwd=tdir).stdout
        assert got == want, opts


def test_sha256sum_c_passes_for_every_file(backup_world, acme, tmp_path):
    rels = visible_files(backup_world, ACME)
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(run_tool(["sha256sum", "--", *rels],
                             cwd=backup_world.tenant_dir(ACME)).stdout)
    r = run_tool(["sha256sum", "--check", "--strict", sums], cwd=acme.mnt)
    oks = [line for line in lines(r.stdout) if line.endswith(": OK")]
    assert len(oks) == len(rels), r.stdout[-2000:]


def test_dd_with_o_direct_reads_the_200_mb_file(backup_world, acme):
    rel = f"{SHOWCASE_RUN}/{BIG_NAME}"
    r = run_tool(["sh", "-c", 'dd if="$1" iflag=direct bs=1M status=none | sha256sum', "sh",
                  acme.mnt / rel])
    assert r.stdout.split()[0] == backup_world.sha256(backup_world.tenant_dir(ACME) / rel)


def test_sqlite3_reads_a_database_artifact_with_immutable_1(backup_world, acme):
    uri = f"file:{acme.mnt}/{SHOWCASE_RUN}/{DB_NAME}?immutable=1"
    before = daemon_stats(acme.mnt)
    r = run_tool(["sqlite3", uri, "SELECT count(*), sum(score) FROM results;"
                                  "PRAGMA integrity_check;"])
    rows = backup_world.db_rows
    assert lines(r.stdout) == [f"{rows}|{sum(i * 0.5 for i in range(rows))}", "ok"]
    assert stats_delta(before, daemon_stats(acme.mnt))["opens"] >= 1


# --------------------------------------------------------------------------
# mmap, O_DIRECT, O_NOATIME
# --------------------------------------------------------------------------

def backing_bytes(world, rel, off, n, tenant=ACME) -> bytes:
    with open(world.tenant_dir(tenant) / rel, "rb") as f:
        f.seek(off)
        return f.read(n)


def test_mmap_reads_give_backing_bytes(backup_world, acme):
    run = acme.mnt / SHOWCASE_RUN
    big = f"{SHOWCASE_RUN}/{BIG_NAME}"
    with open(run / BIG_NAME, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert len(mm) == BIG_SIZE
        assert hashlib.sha256(mm).hexdigest() == \
            backup_world.sha256(backup_world.tenant_dir(ACME) / big)
        for off in random.Random(1).sample(range(0, BIG_SIZE, 4096), 50):
            assert mm[off:off + 8] == off.to_bytes(8, "little"), off   # each block's stamp
    with open(run / SPARSE_NAME, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        assert len(mm) == SPARSE_SIZE
        for off, data in SPARSE_DATA:
            assert mm[off:off + len(data)] == data, off
        assert mm[100 * MIB:100 * MIB + MIB] == bytes(MIB)        # a hole reads as zeros
    for name, want in (("one-byte.bin", b"\0"), ("one.txt", b"x")):
        with open(run / name, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == want, name


def test_mmap_of_a_file_open_with_o_direct(backup_world, acme):
    """mmap of an O_DIRECT descriptor, and of a file that another
    descriptor reads with O_DIRECT: page-cache and direct reads agree."""
    path = acme.mnt / SHOWCASE_RUN / "table.csv"
    want = (backup_world.tenant_dir(ACME) / SHOWCASE_RUN / "table.csv").read_bytes()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as mm:
            assert mm[:] == want
        buf = mmap.mmap(-1, len(want) + 4096)
        n = os.preadv(fd, [buf], 0)
        assert n == len(want) and buf[:n] == want
    finally:
        os.close(fd)


def test_o_direct_reads_at_aligned_offsets_and_the_tail(backup_world, acme):
    rel = f"{SHOWCASE_RUN}/{BIG_NAME}"
    fd = os.open(acme.mnt / rel, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, MIB)            # page aligned, as O_DIRECT wants
    try:
        tail = (BIG_SIZE // 4096) * 4096
        for off in [0, 4096, 37 * MIB, 150 * MIB + 8192, tail - MIB, tail]:
            n = os.preadv(fd, [buf], off)
            assert n == min(MIB, BIG_SIZE - off), off
            assert buf[:n] == backing_bytes(backup_world, rel, off, n), off
        assert os.preadv(fd, [buf], BIG_SIZE) == 0
    finally:
        os.close(fd)
    for name, want in (("one-byte.bin", b"\0"), ("empty.txt", b"")):
        fd = os.open(acme.mnt / SHOWCASE_RUN / name, os.O_RDONLY | os.O_DIRECT)
        try:
            n = os.preadv(fd, [buf], 0)
            assert buf[:n] == want, name
        finally:
            os.close(fd)


def test_o_noatime_opens_work_for_root_and_for_the_owner_shown(backup_world, mounter, acme,
                                                                 tmp_path):
    run = acme.mnt / SHOWCASE_RUN
    for name in ("with space.txt", "one.txt", DB_NAME):
        fd = os.open(run / name, os.O_RDONLY | os.O_NOATIME)
        try:
            assert os.read(fd, 1 << 20) == (backup_world.tenant_dir(ACME) / SHOWCASE_RUN
                                            / name).read_bytes()[:1 << 20]
        finally:
            os.close(fd)
    os.close(os.open(run, os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME))
    # a user who owns the files as the mount shows them (-o uid=): allowed.
    # (tmp_path is 0700: the user starts in the run dir, as root, then
    # drops to nobody, and opens a relative name)
    nobody = 65534
    m2 = mounter(backup_world.store, ACME, "-o", "ro", "-o", f"uid={nobody}", "-o", "gid=65534",
                 "-o", "allow_other", index=tmp_path / "index-uid.db")
    script = ("import os, sys\n"
              "assert os.getuid() == 65534\n"
              "fd = os.open('one.txt', os.O_RDONLY | os.O_NOATIME)\n"
              "sys.stdout.buffer.write(os.read(fd, 100)); os.close(fd)\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=m2.mnt / SHOWCASE_RUN,
                       user=nobody, group=65534, extra_groups=[], capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout == b"x"


def test_o_noatime_leaves_the_backing_atime_alone(backup_world, mounter, tmp_path, initech_dir):
    """The caller's O_NOATIME reaches the backing file: reading through the
    mount with it does not touch the backing atime (the store is on a
    relatime file system, where a plain read of a file whose atime is not
    after its mtime does)."""
    run = initech_dir / "churn-base-0"
    paths = {}
    for flag in ("noatime", "plain"):
        p = run / f"atime-{flag}.txt"
        p.write_bytes(b"atime probe " + flag.encode())
        os.utime(p, ns=(1_600_000_000 * 10**9, 1_600_000_000 * 10**9))
        paths[flag] = p
    m = mount_ro(mounter, backup_world, INITECH, tmp_path)
    wait_until(lambda: (m.mnt / "churn-base-0" / "atime-plain.txt").exists())
    for flag, extra in (("noatime", os.O_NOATIME), ("plain", 0)):
        fd = os.open(m.mnt / "churn-base-0" / paths[flag].name, os.O_RDONLY | extra)
        try:
            assert os.read(fd, 100) == b"atime probe " + flag.encode()
        finally:
            os.close(fd)
    assert os.stat(paths["noatime"]).st_atime_ns == 1_600_000_000 * 10**9
    # the control: without O_NOATIME the backing atime moves (relatime)
    assert os.stat(paths["plain"]).st_atime_ns > 1_600_000_000 * 10**9


# --------------------------------------------------------------------------
# readdir in small batches while the store changes
# --------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
SYS_getdents64 = 217          # x86_64


def getdents(fd: int, bufsize: int) -> list[tuple[str, int, int, int]]:
    """One getdents64(2) call: [(name, d_ino, d_off, d_type)]."""
    buf = ctypes.create_string_buffer(bufsize)
    n = _libc.syscall(SYS_getdents64, ctypes.c_int(fd), buf, ctypes.c_uint(bufsize))
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    raw, out, pos = buf.raw[:n], [], 0
    while pos < n:
        ino, off, reclen, typ = struct.unpack_from("<QqHB", raw, pos)
        name = raw[pos + 19:raw.index(b"\0", pos + 19)]
        out.append((os.fsdecode(name), ino, off, typ))
        pos += reclen
    return out


def list_in_batches(path, bufsize: int, between=None, fd=None) -> tuple[list, int]:
    """Every entry of a directory by getdents64 calls of bufsize bytes,
    calling between(i) after the i-th batch.  Returns (entries, batches)."""
    own = fd is None
    if own:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    entries, batches = [], 0
    try:
        while True:
            got = getdents(fd, bufsize)
            if not got:
                return entries, batches
            entries += got
            batches += 1
            if between:
                between(batches)
    finally:
        if own:
            os.close(fd)


def check_listing(entries, stable: dict, volatile: set, where: str, d_type: int = DT_REG):
    """stable: name -> inode, each listed exactly once with that d_ino and
    d_type; volatile names at most once; nothing else."""
    names = [e[0] for e in entries if e[0] not in (".", "..")]
    dups = sorted({n for n in names if names.count(n) > 1}) if len(names) != len(set(names)) \
        else []
    assert not dups, f"{where}: listed twice: {dups[:20]}"
    missing = sorted(set(stable) - set(names))
    assert not missing, f"{where}: {len(missing)} unchanged entries skipped: {missing[:20]}"
    extra = sorted(set(names) - set(stable) - volatile)
    assert not extra, f"{where}: unknown entries: {extra[:20]}"
    for name, ino, _, typ in entries:
        if name in stable:
            assert (ino, typ) == (stable[name], d_type), f"{where}: {name}: d_ino {ino}, " \
                f"d_type {typ}, not {stable[name]}, {d_type}"
    assert [e[0] for e in entries].count(".") == 1 and [e[0] for e in entries].count("..") == 1


def test_readdir_of_a_10000_file_run_in_batches_while_the_store_changes(
        backup_world, mounter, tmp_path, initech_dir):
    big = initech_dir / BIGDIR_RUN
    names = sorted(n for n in os.listdir(big) if n != "metadata.json")
    assert len(names) == BIGDIR_FILES
    doomed = names[::50]                            # removed during the listing
    added = [f"added-{i:04d}.txt" for i in range(400)]
    m = mount_ro(mounter, backup_world, INITECH, tmp_path)
    stable = {n: backup_world.store.shown_ino(big / n) for n in os.listdir(big)
              if n not in doomed}
    rnd = random.Random(7)
    made_runs = []

    def change(i):
        # in the run being listed: one file gone, two new
        if i <= len(doomed):
            os.unlink(big / doomed[i - 1])
        for name in added[2 * (i - 1):2 * i]:
            (big / name).write_bytes(b"new\n")
        # elsewhere in the tenant: runs come and go, files are rewritten
        if i % 10 == 0:
            rid = f"churn-tmp-{i}"
            (initech_dir / rid).mkdir()
            (initech_dir / rid / "x.txt").write_bytes(b"x")
            made_runs.append(rid)
        if i % 15 == 0 and made_runs:
            rid = made_runs.pop(rnd.randrange(len(made_runs)))
            shutil.rmtree(initech_dir / rid)
        (initech_dir / "churn-base-1" / f"f{i % 20}.txt").write_bytes(f"rewritten {i}\n".encode())

    try:
        entries, batches = list_in_batches(m.mnt / BIGDIR_RUN, 2048, between=change)
        assert batches >= 20, f"only {batches} getdents calls"
        check_listing(entries, stable, set(doomed) | set(added), "while changing")
        # a listing resumed from a cookie (seekdir) continues where it was
        cut = len(entries) // 3
        fd = os.open(m.mnt / BIGDIR_RUN, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.lseek(fd, entries[cut][2], os.SEEK_SET)
            rest, _ = list_in_batches(None, 4096, fd=fd)
        finally:
            os.close(fd)
        before = {e[0] for e in entries[:cut + 1]} & set(stable)
        after = {e[0] for e in rest} & set(stable)
        assert not before & after, f"resumed listing repeats {sorted(before & after)[:10]}"
        assert before | after == set(stable), \
            f"resumed listing skips {sorted(set(stable) - before - after)[:10]}"
        # and a quiet listing, in batches, is exact
        final = {n: backup_world.store.shown_ino(big / n) for n in os.listdir(big)}
        entries, batches = list_in_batches(m.mnt / BIGDIR_RUN, 1024)
        check_listing(entries, final, set(), "after the changes")
    finally:
        for name in doomed:
            (big / name).write_bytes(b"restored\n")
        for name in added:
            (big / name).unlink(missing_ok=True)
        for rid in made_runs:
            shutil.rmtree(initech_dir / rid, ignore_errors=True)


def test_root_readdir_in_batches_while_runs_come_and_go(backup_world, mounter, tmp_path,
                                                       initech_dir):
    m = mount_ro(mounter, backup_world, INITECH, tmp_path)
    stable = {r: backup_world.store.shown_ino(initech_dir / r) for r in os.listdir(initech_dir)}
    made = []

    def change(i):
        rid = f"churn-root-{i}"
        (initech_dir / rid).mkdir()
        (initech_dir / rid / "f.txt").write_bytes(b"f")
        made.append(rid)
        if i % 2 == 0:
            shutil.rmtree(initech_dir / made.pop(0))

    try:
        entries, batches = list_in_batches(m.mnt, 40, between=change)   # one entry a call
        assert batches >= len(stable)
        check_listing(entries, stable, {f"churn-root-{i}" for i in range(batches + 1)}, "root",
                      d_type=DT_DIR)
    finally:
        for rid in made:
            shutil.rmtree(initech_dir / rid, ignore_errors=True)


# --------------------------------------------------------------------------
# copy_file_range past 4 GiB
# --------------------------------------------------------------------------

def huge_bytes(world, off, n) -> bytes:
    return backing_bytes(world, f"{HUGE_RUN}/{HUGE_NAME}", off, n, tenant=INITECH)


def test_copy_file_range_past_4_gib_within_the_mount(backup_world, mounter, tmp_path):
    """copy_file_range from a run's file (4 GiB + 64 MiB, sparse) into an
    upload in promote/: offsets past 4 GiB, and a count above 4 GiB that
    must not be cut to 32 bits (it ends at EOF: 1 MiB)."""
    m = mounter(backup_world.store, INITECH, index=tmp_path / "index.db")
    src_path = m.mnt / HUGE_RUN / HUGE_NAME
    assert os.stat(src_path).st_size == HUGE_SIZE
    run = "churn-base-2"
    dst_path = m.mnt / "promote" / run / "slice.bin"
    src = os.open(src_path, os.O_RDONLY)
    dst = os.open(dst_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        first_off, first_len = 4 * GIB - 4 * MIB, 8 * MIB     # across the 4 GiB line
        done = 0
        while done < first_len:
            n = os.copy_file_range(src, dst, first_len - done, first_off + done, done)
            assert n > 0, f"copy_file_range returned {n} after {done} bytes"
            done += n
        n = os.copy_file_range(src, dst, 4 * GIB + 16 * 1024, HUGE_SIZE - MIB, first_len)
        assert n == MIB, f"a count of 4 GiB + 16 KiB ending at EOF copied {n} bytes, not 1 MiB"
    finally:
        os.close(src)
        os.close(dst)
    want = huge_bytes(backup_world, first_off, first_len) + huge_bytes(backup_world,
                                                                        HUGE_SIZE - MIB, MIB)
    landed = backup_world.tenant_dir(INITECH) / run / "slice.bin"
    try:
        got = landed.read_bytes()
        assert len(got) == len(want)
        assert got == want
        assert b"just-below-4-GiB" in got and got.endswith(b"HUGE-TAIL")
    finally:
        os.unlink(m.mnt / run / "slice.bin")


def test_copy_file_range_and_cp_out_of_the_mount_past_4_gib(backup_world, mounter, tmp_path):
    """copy_file_range from the mount to another file system: the kernel
    (since 5.19) refuses cross-file-system copies with EXDEV before any
    FUSE request, or copies; either way the bytes that arrive are exact.
    cp (which tries copy_file_range, then reads, skipping holes with
    SEEK_DATA/SEEK_HOLE) copies the whole 4 GiB + 64 MiB file exactly,
    sparse, reading only the data from the daemon."""
    m = mount_ro(mounter, backup_world, INITECH, tmp_path)
    src_path = m.mnt / HUGE_RUN / HUGE_NAME
    out = tmp_path / "copy-file-range.bin"
    src = os.open(src_path, os.O_RDONLY)
    dst = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off, data in HUGE_DATA[1:]:
            try:
                n = os.copy_file_range(src, dst, len(data), off, off)
            except OSError as e:
                assert e.errno == errno.EXDEV, e
                break
            assert n == len(data)
            assert os.pread(dst, len(data), off) == data, off
    finally:
        os.close(src)
        os.close(dst)
    before = daemon_stats(m.mnt)
    cp_out = tmp_path / "cp.bin"
    run_tool(["cp", "--sparse=always", src_path, cp_out])
    delta = stats_delta(before, daemon_stats(m.mnt))
    try:
        st = os.stat(cp_out)
        assert st.st_size == HUGE_SIZE
        with open(cp_out, "rb") as f:
            for off, data in HUGE_DATA:
                f.seek(off)
                assert f.read(len(data)) == data, off
            f.seek(4 * GIB + 100 * 4096)
            assert f.read(MIB) == bytes(MIB)
        assert st.st_blocks * 512 < 64 * MIB, f"the copy is not sparse: {st.st_blocks} blocks"
        assert delta["read_bytes"] < 64 * MIB, f"cp read the holes through the mount: {delta}"
    finally:
        cp_out.unlink(missing_ok=True)
        out.unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Out-of-band rewrites, df
# --------------------------------------------------------------------------

def test_out_of_band_rewrites_show_new_sizes_and_bytes(backup_world, mounter, tmp_path,
                                                       initech_dir):
    """The kernel-server rewrites files in place (O_TRUNC, same inode):
    stat, cat, wc and sha256sum through the mount see the new size and
    bytes, growing and shrinking, however long the kernel may cache."""
    rel = "churn-base-0/f3.txt"
    path = initech_dir / rel
    m = mount_ro(mounter, backup_world, INITECH, tmp_path)
    view = m.mnt / rel
    assert view.read_bytes() == path.read_bytes()         # now in the page cache
    for content in (b"grown " * 5000, b"short\n", b"", b"back again\n"):
        ino = os.stat(path).st_ino
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        os.write(fd, content)
        os.close(fd)
        assert os.stat(path).st_ino == ino
        wait_until(lambda: os.stat(view).st_size == len(content),
                   what=f"size {len(content)} in the mount")
        assert os.stat(view).st_mtime_ns == os.stat(path).st_mtime_ns
        assert run_tool(["cat", view]).stdout.encode() == content
        assert run_tool(["wc", "-c", view]).stdout.split()[0] == str(len(content))
        assert run_tool(["sha256sum", view]).stdout.split()[0] == \
            hashlib.sha256(content).hexdigest()


def df(mnt) -> dict:
    out = run_tool(["df", "-P", "-B1", mnt], env=UTF8_ENV).stdout
    rows = [line.split() for line in lines(out)[1:]]
    rows = [r for r in rows if r[-1] == str(mnt)]
    assert len(rows) == 1, out
    return {"size": int(rows[0][1]), "used": int(rows[0][2]), "avail": int(rows[0][3])}


def test_df_lists_the_mount_with_the_store_file_system_figures(backup_world, acme):
    got = df(acme.mnt)
    assert got["size"] > 0 and 0 <= got["used"] <= got["size"], got
    sv, store = os.statvfs(acme.mnt), os.statvfs(backup_world.root)
    assert sv.f_blocks > 0 and sv.f_bsize > 0
    assert sv.f_blocks * sv.f_frsize == store.f_blocks * store.f_frsize


def test_df_with_a_quota_shows_the_quota_and_the_tenant_usage(backup_world, mounter, tmp_path):
    """With -o quota_bytes and quota_files, df is about the tenant: the size
    is the quota and the used figure the tenant's usage (the apparent size
    of its artifacts, as the quota counts it), the inodes the file quota."""
    tdir = backup_world.tenant_dir(ACME)
    exp = expected(backup_world)
    low = sum(e["size"] for rel, e in exp.items()
              if e["type"] == "f" and not rel.endswith("/metadata.json"))
    nlow = sum(1 for rel, e in exp.items() if e["type"] == "f" and
               not rel.endswith("/metadata.json"))
    high, nhigh = 0, 0                  # every file of every run dir, expired ones too
    for run in os.listdir(tdir):
        if (tdir / run).is_dir():
            for name in os.listdir(tdir / run):
                st = os.lstat(tdir / run / name)
                if stat.S_ISREG(st.st_mode):
                    high, nhigh = high + st.st_size, nhigh + 1
    quota, qfiles = 2 * high, 10 * nhigh
    m = mounter(backup_world.store, ACME, "-o", f"quota_bytes={quota}",
                "-o", f"quota_files={qfiles}", index=tmp_path / "index.db")
    sv = os.statvfs(m.mnt)
    size, used = sv.f_blocks * sv.f_frsize, (sv.f_blocks - sv.f_bfree) * sv.f_frsize
    figures = f"df of a tenant with quota {quota} bytes / {qfiles} files: size {size}, " \
              f"used {used}, avail {sv.f_bavail * sv.f_frsize}, files {sv.f_files}, " \
              f"free files {sv.f_ffree}; tenant usage {low}..{high} bytes, {nlow}..{nhigh} files"
    print(figures)
    assert abs(size - quota) < sv.f_frsize, figures
    assert low - sv.f_frsize < used <= high + sv.f_frsize * nhigh, figures
    assert sv.f_bavail * sv.f_frsize == size - used, figures
    assert sv.f_files == qfiles and nlow <= sv.f_files - sv.f_ffree <= nhigh, figures
    assert df(m.mnt)["size"] == size
