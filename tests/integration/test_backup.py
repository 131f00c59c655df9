"""Backups of a tenant mount with the real tools: full backups restore
exactly, incremental backups of an unchanged tenant read nothing.

The store is the session's large three-tenant store (backup_store.py).
Backups are taken as docs/backup.md says: the tenant mounted with -o ro
(so no promote/).  Every restored tree is compared with the backing store,
the source of truth: the same names (nothing hidden leaks in), bytes,
sizes, mtimes and user.artifact.* xattrs.

Incremental backups (restic, borg, rsync) run after a remount at the same
mountpoint, after a kill -9 and restart, and after the index was deleted
and rebuilt: the tools' own statistics must report no new and no changed
file, and the daemon's read counters (user.artifactfs.stats) must show no
file read.  borg is the one exception it documents itself: it always
re-reads the files with the newest ctime (its files cache drops them, as a
guard against changes within the timestamp granularity), on any file
system; for borg the test asserts that exactly those files, and nothing
else, are read again.  After one artifact is promoted, exactly that file
is new (and its run's metadata.json, rewritten by the promotion, changed).

The tools' figures are printed to the terminal (and into the captured
output) for every backup."""

from __future__ import annotations

import os
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import daemon_stats, wait_until
from backup_store import (
    ACME, BIG_SIZE, GLOBEX, SPARSE_SIZE, UTF8_ENV,
    compare_restore, expected_tree, mount_ro, run_tool, stats_delta,
    visible_files,
)

pytestmark = pytest.mark.daemon_timeout(300)

NO_READS = {"opens": 0, "reads": 0, "read_bytes": 0, "passthrough_opens": 0}


@pytest.fixture
def work(tmp_path):
    """A scratch directory for archives, repositories and restores, removed
    after the test (they hold hundreds of MB)."""
    d = tmp_path / "work"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def log_figures(capsys):
    """Prints a line to the terminal even under capture (the test log of
    tools/test), and into the captured output too."""
    first = [True]

    def log(line: str):
        print(line)
        with capsys.disabled():
            print(("\n" if first[0] else "") + f"    {line}")
        first[0] = False
    return log


def fail_on(problems: list[str], what: str):
    assert not problems, f"{what}: {len(problems)} differences:\n" + "\n".join(problems[:40])


# --------------------------------------------------------------------------
# The tools
# --------------------------------------------------------------------------

@dataclass
class Outcome:
    """What one backup run reported: relpaths (in the mount) of the files it
    found new and changed, its figures as one line, its raw statistics."""
    new: set = field(default_factory=set)
    changed: set = field(default_factory=set)
    figures: str = ""
    raw: dict = field(default_factory=dict)


class Restic:
    name = "restic"

    def __init__(self, work: Path, mnt: Path):
        self.mnt = mnt
        self.env = {**UTF8_ENV, "RESTIC_REPOSITORY": str(work / "restic-repo"),
                    "RESTIC_PASSWORD": "artifactfs-test",
                    "RESTIC_CACHE_DIR": str(work / "restic-cache")}
        run_tool(["restic", "init"], env=self.env)

    def backup(self) -> Outcome:
        r = run_tool(["restic", "backup", "--json", "-vv", "--host", "artifactfs-test",
                      self.mnt], env=self.env)
        out = Outcome()
        summary = None
        for line in r.stdout.splitlines():
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            kind = msg.get("message_type")
            if kind == "verbose_status" and not msg["item"].endswith("/"):
                rel = os.path.relpath(msg["item"], self.mnt)
                if msg["action"] == "new":
                    out.new.add(rel)
                elif msg["action"] in ("modified", "changed"):
                    out.changed.add(rel)
            elif kind == "summary":
                summary = msg
        assert summary, f"no summary in restic's output:\n{r.stdout[-2000:]}"
        out.raw = summary
        out.figures = (f"restic: {summary['files_new']} new, {summary['files_changed']} changed, "
                       f"{summary['files_unmodified']} unmodified files; "
                       f"dirs {summary['dirs_new']} new, {summary['dirs_changed']} changed; "
                       f"data added {summary['data_added']} bytes; "
                       f"{summary['total_duration']:.2f} s")
        # the per-file lines and the summary agree
        assert (summary["files_new"], summary["files_changed"]) == (len(out.new),
                                                                     len(out.changed)), out
        return out

    def restore(self, target: Path) -> Path:
        run_tool(["restic", "restore", "latest", "--target", target], env=self.env)
        return target / self.mnt.relative_to("/")


class Borg:
    name = "borg"

    def __init__(self, work: Path, mnt: Path):
        self.mnt = mnt
        self.n = 0
        self.env = {**UTF8_ENV, "BORG_REPO": str(work / "borg-repo"),
                    "BORG_BASE_DIR": str(work / "borg-base"), "BORG_PASSPHRASE": "",
                    "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
                    "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}
        run_tool(["borg", "init", "--encryption=none"], env=self.env)

    def backup(self) -> Outcome:
        self.n += 1
        r = run_tool(["borg", "create", "--stats", "--json", "--list", "--filter=AME",
                      f"::a{self.n}", self.mnt], env=self.env)
        out = Outcome()
        for line in r.stderr.splitlines():
            m = re.match(r"([AME]) (/.*)$", line)
            if not m:
                continue
            assert m.group(1) != "E", f"borg: error on a file: {line}\n{r.stderr[-2000:]}"
            rel = os.path.relpath(m.group(2), self.mnt)
            (out.new if m.group(1) == "A" else out.changed).add(rel)
        stats = json.loads(r.stdout)["archive"]["stats"]
        out.raw = stats
        out.figures = (f"borg: {len(out.new)} added, {len(out.changed)} modified files "
                       f"(--list --filter=AME); nfiles {stats['nfiles']}, original "
                       f"{stats['original_size']} bytes, deduplicated "
                       f"{stats['deduplicated_size']} bytes")
        return out

    def restore(self, target: Path) -> Path:
        run_tool(["borg", "extract", f"::a{self.n}"], env=self.env, cwd=target)
        return target / self.mnt.relative_to("/")


class Rsync:
    name = "rsync"
    STAT_LINES = ("Number of files:", "Number of created files:",
                  "Number of regular files transferred:", "Total transferred file size:")

    def __init__(self, work: Path, mnt: Path, options=("-aX",)):
        self.mnt = mnt
        self.dest = work / "rsync-copy"
        self.options = list(options)

    def backup(self) -> Outcome:
        r = run_tool(["rsync", *self.options, "--stats", "--itemize-changes",
                      f"{self.mnt}/", f"{self.dest}/"])
        out = Outcome()
        for line in r.stdout.splitlines():
            m = re.match(r">f(\S+) (.*)$", line)
            if m:
                (out.new if m.group(1).startswith("+++") else out.changed).add(m.group(2))
        m = re.search(r"^Number of regular files transferred: ([\d,]+)$", r.stdout, re.M)
        assert m, f"no statistics in rsync's output:\n{r.stdout[-2000:]}"
        out.raw = {"transferred": int(m.group(1).replace(",", ""))}
        out.figures = "rsync: " + "; ".join(
            line.strip() for line in r.stdout.splitlines() if line.startswith(self.STAT_LINES))
        assert out.raw["transferred"] == len(out.new) + len(out.changed), out
        return out

    def restore(self, target: Path) -> Path:
        return self.dest


TOOLS = {"restic": Restic, "borg": Borg, "rsync": Rsync}


# --------------------------------------------------------------------------
# Full backups restore exactly
# --------------------------------------------------------------------------

def tar_roundtrip(mnt: Path, work: Path, create: list, extract: list) -> Path:
    archive = work / "backup.tar"
    run_tool(["tar", "--create", "--format=posix", *create, "--file", archive, "-C", mnt, "."])
    out = work / "restored"
    out.mkdir()
    run_tool(["tar", "--extract", "--preserve-permissions", *extract, "--file", archive,
              "-C", out])
    return out


def test_tar_xattrs_restores_bytes_mtimes_and_xattrs(backup_world, mounter, tmp_path, work):
    m = mount_ro(mounter, backup_world, ACME, tmp_path)
    opts = ["--xattrs", "--xattrs-include=user.*"]
    restored = tar_roundtrip(m.mnt, work, opts, opts)
    fail_on(compare_restore(backup_world, ACME, restored), "tar --xattrs")


def test_tar_sparse_restores_bytes_and_holes(backup_world, mounter, tmp_path, work):
    """GNU tar --sparse trusts st_blocks: a file claiming 0 blocks would be
    archived as all holes.  The restore must have every byte, and the
    sparse file must come back sparse, and the archive must not hold its
    holes."""
    m = mount_ro(mounter, backup_world, ACME, tmp_path)
    restored = tar_roundtrip(m.mnt, work, ["--sparse"], [])
    fail_on(compare_restore(backup_world, ACME, restored, check_xattrs=False, sparse=True),
            "tar --sparse")
    apparent = sum(e["size"] for e in expected_tree(backup_world, ACME, with_data=False).values()
                   if e["type"] == "f")
    archive = (work / "backup.tar").stat().st_size
    assert archive < apparent - SPARSE_SIZE // 2, \
        f"archive of {archive} bytes for {apparent} apparent bytes: the holes were archived"
    assert archive > BIG_SIZE, f"archive of {archive} bytes: data was stored as holes"


def test_rsync_aX_restores_exactly(backup_world, mounter, tmp_path, work):
    m = mount_ro(mounter, backup_world, ACME, tmp_path)
    dest = work / "copy"
    run_tool(["rsync", "-aX", f"{m.mnt}/", f"{dest}/"])
    fail_on(compare_restore(backup_world, ACME, dest), "rsync -aX")


def test_cp_a_restores_exactly(backup_world, mounter, tmp_path, work):
    m = mount_ro(mounter, backup_world, ACME, tmp_path)
    dest = work / "copy"
    run_tool(["cp", "-a", f"{m.mnt}/.", dest])
    fail_on(compare_restore(backup_world, ACME, dest), "cp -a")


@pytest.mark.parametrize("tool", ["restic", "borg"])
def test_backup_and_restore_exactly(backup_world, mounter, tmp_path, work, tool, log_figures):
    m = mount_ro(mounter, backup_world, ACME, tmp_path)
    t = TOOLS[tool](work, m.mnt)
    out = t.backup()
    log_figures(f"[{tool} full backup of {ACME}] {out.figures}")
    files = set(visible_files(backup_world, ACME))
    assert out.new == files and not out.changed
    target = work / "restore"
    target.mkdir()
    restored = t.restore(target)
    fail_on(compare_restore(backup_world, ACME, restored), f"{tool} restore")


def test_writable_mount_backed_up_without_promote(backup_world, mounter, tmp_path, work):
    """Where a backup must use a writable mount, excluding promote/ gives
    exactly the runs (docs/backup.md)."""
    m = mounter(backup_world.store, GLOBEX, index=tmp_path / "index.db")
    assert (m.mnt / "promote").is_dir()
    dest = work / "copy"
    run_tool(["rsync", "-aX", "--exclude=/promote", f"{m.mnt}/", f"{dest}/"])
    fail_on(compare_restore(backup_world, GLOBEX, dest), "rsync -aX --exclude=/promote")


# --------------------------------------------------------------------------
# Incremental backups read nothing
# --------------------------------------------------------------------------

def newest_ctime_files(world, tenant) -> set:
    """The visible files with the newest ctime (backing store): those borg
    re-reads at every run by design."""
    ctimes = {rel: os.stat(world.tenant_dir(tenant) / rel).st_ctime_ns
              for rel in visible_files(world, tenant)}
    newest = max(ctimes.values())
    return {rel for rel, c in ctimes.items() if c == newest}


def page_rounded_size(world, tenant, rels) -> int:
    return sum(-(-os.stat(world.tenant_dir(tenant) / rel).st_size // 4096) * 4096
               for rel in rels)


def delete_index(index: Path):
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(f"{index}{suffix}")
        except FileNotFoundError:
            pass
    assert not index.exists()


@pytest.mark.parametrize("tool", ["restic", "borg", "rsync"])
def test_incremental_backups_read_nothing(backup_world, mounter, tmp_path, work, tool,
                                          log_figures):
    world = backup_world
    mnt = tmp_path / "mnt"
    index = tmp_path / "index.db"
    m = mount_ro(mounter, world, GLOBEX, tmp_path, mnt=mnt)
    t = TOOLS[tool](work, mnt)

    files = set(visible_files(world, GLOBEX))
    full = t.backup()
    log_figures(f"[{tool} {GLOBEX}: full backup] {full.figures}")
    assert full.new == files and not full.changed

    for step in ("remount", "kill -9 and restart", "index deleted and rebuilt"):
        if step == "remount":
            m.unmount()
        elif step.startswith("kill"):
            m.kill9()
        else:
            m.unmount()
            delete_index(index)
        m = mount_ro(mounter, world, GLOBEX, tmp_path, mnt=mnt)
        rereads = newest_ctime_files(world, GLOBEX) if tool == "borg" else set()
        before = daemon_stats(mnt)
        out = t.backup()
        delta = stats_delta(before, daemon_stats(mnt))
        log_figures(f"[{tool} {GLOBEX}: after {step}] {out.figures}; daemon {delta}" +
                    (f"; borg's newest-ctime re-reads: {sorted(rereads)}" if rereads else ""))
        if tool == "borg":
            # borg re-reads the newest-ctime files (its own rule), nothing else
            assert out.new | out.changed == rereads, (step, out.new, out.changed)
            assert delta["read_bytes"] <= page_rounded_size(world, GLOBEX, rereads), (step, delta)
        else:
            assert (out.new, out.changed) == (set(), set()), step
            assert delta == NO_READS, f"{tool} after {step}: the daemon read file content"
        if tool == "restic":
            assert (out.raw["files_new"], out.raw["files_changed"]) == (0, 0)
            assert out.raw["files_unmodified"] == len(files)
        if tool == "rsync":
            assert out.raw["transferred"] == 0

    # one artifact promoted (through a second, writable mount): exactly it is new
    rereads = newest_ctime_files(world, GLOBEX) if tool == "borg" else set()
    run = world.runs[GLOBEX][1 + list(TOOLS).index(tool)]
    name = f"promoted by {tool}.csv"
    data = f"tool,{tool}\n".encode() * 1000
    src = work / "upload.csv"
    src.write_bytes(data)
    w = mounter(world.store, GLOBEX, index=tmp_path / "writer-index.db")
    run_tool(["cp", src, w.mnt / "promote" / run / name])
    backing = world.tenant_dir(GLOBEX) / run
    assert (backing / name).read_bytes() == data
    w.unmount()
    # the backup mount sees the new file and the new metadata.json by itself
    wait_until(lambda: (os.stat(mnt / run / name).st_size == len(data) and
                        os.stat(mnt / run / "metadata.json").st_ino
                        == world.store.shown_ino(backing / "metadata.json")),
               what="the promoted file in the -o ro mount")
    before = daemon_stats(mnt)
    out = t.backup()
    delta = stats_delta(before, daemon_stats(mnt))
    log_figures(f"[{tool} {GLOBEX}: after promoting {run}/{name}] {out.figures}; "
                f"daemon {delta}")
    new_file, meta = f"{run}/{name}", f"{run}/metadata.json"
    if tool == "borg":
        assert new_file in out.new
        assert out.new | out.changed == {new_file, meta} | rereads, (out.new, out.changed)
    else:
        assert out.new == {new_file}, out.new
        assert out.changed == {meta}, out.changed
        assert delta["opens"] == 2, delta           # the new file and metadata.json
        # Read by the daemon, or by the kernel from the store (passthrough).
        assert 0 < delta["read_bytes"] or delta["passthrough_opens"] == 2, delta
    if tool == "rsync":
        # rsync sets a directory's mtime before its receiver has written
        # the new files into it, so the directory may keep the time of the
        # transfer (from a local source too), and later runs compare
        # directory times to the second only.  A further run transfers
        # nothing; the copy is exact, directory mtimes to the second.
        again = t.backup()
        log_figures(f"[{tool} {GLOBEX}: once more] {again.figures}")
        assert again.raw["transferred"] == 0
        fail_on(compare_restore(world, GLOBEX, t.dest, dir_mtime_res_ns=10**9),
                "rsync copy after the promotion")
