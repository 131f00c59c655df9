"""Crash safety of promote/: the daemon is killed with SIGKILL at random
points while a writer promotes 200 files of mixed sizes; after each
remount, what close() acknowledged is there, whole, and nothing else is.

The writer is a separate process.  It writes promote/<run>/<name> with one
of a few write patterns and appends "name sha256" to a log file (fsync'd)
only once close() returned 0.  The content of a file is derived from its
name (random.Random(name).randbytes(size), the size is in the name), so a
file that is present but was not acknowledged can still be checked for
wholeness.

Set ARTIFACTFS_CRASH_SEED to replay a run; the seed is in every failure
message.
"""

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    ALICE, ALICE_RUN, expected_files, read_bytes, read_metadata, staging_files, store_state,
    wait_until,
)

RUN = "c4a5h000-0000-4000-8000-00000000dead"
TOTAL = 200
MB = 1024 * 1024

WRITER = r'''
import errno, hashlib, os, random, sys
promote_run, log_path, start, names = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]

def content(name):
    size = int(name.split("-")[1].split(".")[0])
    return random.Random(name).randbytes(size)

if not os.path.isdir(promote_run):
    try:
        os.mkdir(promote_run)
    except FileExistsError:
        pass
with open(log_path, "a") as log:
    for i in range(start, len(names)):
        name = names[i]
        data = content(name)
        fd = os.open(os.path.join(promote_run, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        pattern = i % 3
        try:
            if pattern == 0:                    # sequential, 1 MiB writes
                for off in range(0, len(data), 1 << 20):
                    os.write(fd, data[off:off + (1 << 20)])
            elif pattern == 1:                  # ftruncate, then pwrite backwards
                os.ftruncate(fd, len(data))
                offs = list(range(0, len(data), 200_000))
                for off in reversed(offs):
                    os.pwrite(fd, data[off:off + 200_000], off)
            else:                               # small writes
                for off in range(0, len(data), 65536):
                    os.write(fd, data[off:off + 65536])
            if not data:
                # An upload nothing was written to is committed at its last
                # close, after close() returned (docs/promote.md, "When
                # close() cannot tell"); truncating it is writing it.
                os.ftruncate(fd, 0)
        except OSError:
            os.close(fd)
            raise
        os.close(fd)                            # raises if the commit failed
        log.write(f"{name} {hashlib.sha256(data).hexdigest()}\n")
        log.flush()
        os.fsync(log.fileno())
'''


def content(name: str) -> bytes:
    size = int(name.split("-")[1].split(".")[0])
    return random.Random(name).randbytes(size)


def plan(rng: random.Random) -> list[str]:
    """200 names f<i>-<size>.bin: mostly small, some medium, a few large
    (up to 50 MB), a few empty; under 400 MB in all."""
    large = set(rng.sample(range(10, TOTAL), 6))
    medium = set(rng.sample(sorted(set(range(TOTAL)) - large), 14))
    names = []
    for i in range(TOTAL):
        if i in large:
            size = rng.randint(20 * MB, 50 * MB)
        elif i in medium:
            size = rng.randint(100_000, 3 * MB)
        elif i % 37 == 0:
            size = 0
        else:
            size = rng.randint(1, 64 * 1024)
        names.append(f"f{i:03d}-{size}.bin")
    assert sum(int(n.split("-")[1][:-4]) for n in names) < 400 * MB
    return names


def read_log(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]          # a last line without its newline is still being written
    return [tuple(line.split()) for line in lines]


class Verifier:
    def __init__(self, store, names, seed):
        self.store = store
        self.names = names
        self.index = {n: i for i, n in enumerate(names)}
        self.seed = seed
        self.digests: dict[str, str] = {}

    def digest(self, name: str) -> str:
        if name not in self.digests:
            self.digests[name] = hashlib.sha256(content(name)).hexdigest()
        return self.digests[name]

    def check(self, m, acked: list[tuple[str, str]], attempted_upto: int, when: str) -> set:
        """After a remount: returns the set of files present."""
        ctx = f"[seed {self.seed}, {when}]"
        run_dir = self.store.run_dir(ALICE, RUN)
        acked_names = [n for n, _ in acked]
        assert acked_names == self.names[:len(acked_names)], f"{ctx} writer log out of order"
        for name, digest in acked:
            assert digest == self.digest(name), f"{ctx} writer logged a wrong digest for {name}"
        if not run_dir.exists():
            assert acked == [], f"{ctx} run dir missing although {len(acked)} files were acked"
            present = set()
        else:
            listed = expected_files(run_dir)
            present = set(listed) - {"metadata.json"}
            assert set(os.listdir(run_dir)) == set(listed), \
                f"{ctx} non-regular entries in the run dir: {sorted(set(os.listdir(run_dir)) - set(listed))}"
            assert "metadata.json" in listed or not present, f"{ctx} files without metadata.json"
        for name, digest in acked:
            assert name in present, f"{ctx} acknowledged {name} is missing"
        for name in present:
            assert name in self.index and self.index[name] <= attempted_upto, \
                f"{ctx} unexpected file {name} (writer got no further than #{attempted_upto})"
            got = hashlib.sha256(read_bytes(run_dir / name)).hexdigest()
            assert got == self.digest(name), f"{ctx} {name} is partial or corrupt"
        if present:
            meta = read_metadata(run_dir)
            listed_meta = [a["filename"] for a in meta["artifacts"]]
            assert sorted(listed_meta) == sorted(present), \
                f"{ctx} metadata.json lists {sorted(set(listed_meta) ^ present)} differently"
            for a in meta["artifacts"]:
                assert a["size_bytes"] == os.stat(run_dir / a["filename"]).st_size, f"{ctx} {a}"
        assert staging_files(self.store, ALICE) == [], f"{ctx} staging not emptied by the remount"
        # the mount agrees
        if present:
            assert sorted(os.listdir(m.mnt / RUN)) == sorted(present | {"metadata.json"}), ctx
            for name, digest in acked:
                assert os.getxattr(m.mnt / RUN / name, "user.artifact.sha256") == digest.encode(), \
                    f"{ctx} user.artifact.sha256 of acknowledged {name}"
        else:
            assert RUN not in os.listdir(m.mnt), ctx
        return present


def unacked_in_store(store, log: Path) -> bool:
    """A file of the run is in the store but not in the writer's log."""
    try:
        present = {n for n in os.listdir(store.run_dir(ALICE, RUN))
                   if not n.startswith(".") and n != "metadata.json"}
    except FileNotFoundError:
        return False
    return bool(present - {n for n, _ in read_log(log)})


def start_writer(m, log: Path, start: int, names: list[str], err_path: Path):
    err = open(err_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-c", WRITER, str(m.mnt / "promote" / RUN),
                                 str(log), str(start), *names],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    finally:
        err.close()


@pytest.mark.daemon_timeout(600)
def test_sigkill_during_200_promotions_loses_nothing_acknowledged(store, mounter, tmp_path):
    seed = int(os.environ.get("ARTIFACTFS_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    rng = random.Random(seed)
    names = plan(rng)
    v = Verifier(store, names, seed)
    log = tmp_path / "acked.log"
    werr = tmp_path / "writer.stderr"
    large = [i for i, n in enumerate(names) if int(n.split("-")[1][:-4]) >= 20 * MB]
    mount_opts = dict(allow_warnings=True)       # the remount may warn about what it cleaned up
    m = mounter(store, ALICE, **mount_opts)
    kills, start = 0, 0
    for epoch in range(12):
        if kills >= 7 or start >= TOTAL - 25:
            break
        # kill points: after a random number of acknowledgements, then
        # either a random delay or the moment a commit is under way; the
        # third one while a large file is on its way
        upcoming = [i for i in large if i > start]
        target = upcoming[0] if epoch == 2 and upcoming else start + rng.randint(1, 20)
        writer = start_writer(m, log, start, names, werr)
        wait_until(lambda: len(read_log(log)) >= target or writer.poll() is not None,
                   timeout=240, interval=0.005, what=f"[seed {seed}] {target} acknowledgements")
        if writer.poll() is not None:
            pytest.fail(f"[seed {seed}] writer exited early ({writer.returncode}): "
                        f"{werr.read_text(errors='replace')[-2000:]}")
        if epoch % 2:
            # in the middle of a commit: as soon as a file not yet
            # acknowledged shows in the store (renamed into place; its
            # metadata.json entry, index row and close() may still be due)
            how = "at a commit"
            wait_until(lambda: unacked_in_store(store, log) or writer.poll() is not None,
                       timeout=120, interval=0.0005, what=f"[seed {seed}] a commit")
        else:
            delay = rng.choice([0, rng.uniform(0, 0.02), rng.uniform(0, 0.1), rng.uniform(0, 0.3)])
            how = f"after {delay:.3f} s"
            time.sleep(delay)                               # a random point, on purpose
        alive = writer.poll() is None
        m.sigkill()
        kills += alive
        try:
            writer.wait(30)
        except subprocess.TimeoutExpired:
            writer.kill()
            pytest.fail(f"[seed {seed}] writer hung after the daemon was killed")
        m.unmount_dead()
        acked = read_log(log)
        attempted = len(acked)            # the writer may have been inside names[len(acked)]
        m = mounter(store, ALICE, mnt=m.mnt, **mount_opts)
        v.check(m, acked, attempted, f"after kill {epoch + 1} (target {target}, {how})")
        start = len(acked)
    assert kills >= 5, f"[seed {seed}] only {kills} kills hit a running writer"
    # the rest without a crash: all 200 acknowledged, then a clean unmount
    writer = start_writer(m, log, start, names, werr)
    assert writer.wait(300) == 0, werr.read_text(errors="replace")[-2000:]
    acked = read_log(log)
    assert [n for n, _ in acked] == names
    present = v.check(m, acked, TOTAL - 1, "after the last writer")
    assert present == set(names)
    m.unmount()
    assert staging_files(store, ALICE) == []


def test_upload_in_flight_at_sigkill_leaves_nothing(store, mounter):
    m = mounter(store, ALICE, allow_warnings=True)
    before = store_state(store)
    fd = os.open(m.mnt / "promote" / ALICE_RUN / "interrupted.bin",
                 os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"partial " * 100_000)
    assert staging_files(store, ALICE) != []
    m.sigkill()
    with pytest.raises(OSError):
        os.close(fd)
    m.unmount_dead()
    m = mounter(store, ALICE, mnt=m.mnt, allow_warnings=True)
    assert staging_files(store, ALICE) == []
    assert store_state(store) == before
    assert "interrupted.bin" not in os.listdir(m.mnt / ALICE_RUN)
    assert sorted(os.listdir(m.mnt / ALICE_RUN)) == expected_files(store.run_dir(ALICE, ALICE_RUN))


def test_request_in_flight_at_sigkill_leaves_whole_files_only(store, mounter):
    """A request for several files, killed at a random point: each file is
    afterwards either whole (and listed) or absent."""
    files = {f"part-{i}.bin": random.Random(i).randbytes(3 * MB) for i in range(8)}
    store.add_session_output(ALICE_RUN, files)
    m = mounter(store, ALICE, allow_warnings=True)
    old = read_metadata(store.run_dir(ALICE, ALICE_RUN))
    req = subprocess.Popen([sys.executable, "-c",
                            "import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY|os.O_CREAT, 0o644);"
                            "os.write(fd, sys.argv[2].encode()); os.close(fd)",
                            str(m.mnt / "promote" / "req.json"),
                            json.dumps({"run_id": ALICE_RUN, "files": sorted(files)})],
                           stderr=subprocess.DEVNULL)
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    wait_until(lambda: any((run_dir / n).exists() for n in files) or req.poll() is not None,
               timeout=30, interval=0.002, what="first file of the request promoted")
    m.sigkill()
    req.wait(30)
    m.unmount_dead()
    m = mounter(store, ALICE, mnt=m.mnt, allow_warnings=True)
    meta = read_metadata(run_dir)
    present = set(expected_files(run_dir)) - {"metadata.json"}
    assert sorted(a["filename"] for a in meta["artifacts"]) == sorted(present)
    assert meta["artifacts"][:len(old["artifacts"])] == old["artifacts"]
    for name in present & set(files):
        assert read_bytes(run_dir / name) == files[name], name
    assert staging_files(store, ALICE) == []
    assert not any(n.startswith("req") for n in os.listdir(m.mnt / "promote"))
