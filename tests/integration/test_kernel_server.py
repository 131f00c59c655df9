"""Sharing runs with the RARO kernel-server, which writes the same store
without a lock: it copies a file into the run, reads metadata.json, appends
an entry and writes the file back in place (O_TRUNC, then write).

artifactfs must neither fail a promotion because it caught metadata.json
half written, nor lose an entry of the other writer's; entries an unlocked
writer loses anyway (its write racing ours, or ours racing its read) are
put back once the run is quiet, and duplicates fold into one.  A
metadata.json broken for good is refused, untouched.
"""

import errno
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (
    ALICE, DEFAULT_AGENT, XATTR_PREFIX, Store, entries_by_name, expected_files,
    promote_status, read_bytes, read_metadata, rfc3339, serde_pretty, system_content_type,
    ts_ns, wait_until, write_close, xattrs,
)

RUN = "5a4ed000-0000-4000-8000-00000000c0de"
KS_AGENT = "ks-agent"
KS_UID = 65534          # the kernel-server as another user: nobody
# The grace a repair waits (promote.c), plus the watcher's settling, plus slack.
REPAIR_WAIT = 10.0


def ks_new_run(run: str) -> dict:
    now = datetime.now(timezone.utc)
    return {"run_id": run, "workflow_id": "wf-ks", "user_directive": "",
            "created_at": rfc3339(now), "expires_at": rfc3339(now + timedelta(days=7)),
            "artifacts": [], "status": "active"}


def ks_write_metadata(run_dir, meta: dict, *, pause: float = 0.0) -> None:
    """The kernel-server's write: truncate in place, then write; with pause,
    in two halves, so a reader can catch it half written."""
    data = serde_pretty(meta)
    fd = os.open(run_dir / "metadata.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        half = len(data) // 2 if pause else len(data)
        os.write(fd, data[:half])
        if pause:
            time.sleep(pause)
            os.write(fd, data[half:])
    finally:
        os.close(fd)


def ks_promote(run_dir, name: str, data: bytes, *, pause: float = 0.0) -> None:
    """One kernel-server promotion: copy the file in, read metadata.json (or
    start it), append an entry, write it back in place."""
    (run_dir / name).write_bytes(data)
    try:
        meta = json.loads((run_dir / "metadata.json").read_bytes())
    except FileNotFoundError:
        meta = ks_new_run(run_dir.name)
    meta["artifacts"].append({
        "filename": name, "agent_id": KS_AGENT,
        "generated_at": rfc3339(datetime.now(timezone.utc)),
        "size_bytes": len(data), "content_type": "application/octet-stream",
    })
    ks_write_metadata(run_dir, meta, pause=pause)


def promote_file(m, run: str, name: str, data: bytes) -> str:
    """A promote/ upload: "ok" or the errno name of the failing step."""
    try:
        fd = os.open(m.mnt / "promote" / run / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except OSError as e:
        return errno.errorcode[e.errno]
    try:
        os.write(fd, data)
    finally:
        try:
            os.close(fd)
        except OSError as e:
            return errno.errorcode[e.errno]
    return "ok"


def every_file_has_one_entry(run_dir) -> bool:
    """metadata.json is valid, and its entries are exactly the run's files."""
    try:
        meta = read_metadata(run_dir)
    except (AssertionError, ValueError, FileNotFoundError):
        return False
    names = [a["filename"] for a in meta["artifacts"]]
    return sorted(names) == sorted(set(expected_files(run_dir)) - {"metadata.json"})


def repairs(m, run: str) -> list[dict]:
    return [e for e in promote_status(m.mnt) if e["action"] == "repair" and e["run"] == run]


# ------------------------------------------------------------ sharing a run


def test_promotions_and_the_kernel_server_share_a_run(store, mounter):
    """4 x 50 promote/ uploads against 4 x 50 kernel-server promotions into
    one run (the kernel-server one at a time, writing metadata.json in two
    halves): every close() returns 0, and once the run has settled every
    file has exactly one entry, ours as promoted and the kernel-server's
    with its agent (or rebuilt from the file where an in-place write landed
    on a replaced inode, each such repair audited)."""
    run_dir = store.run_dir(ALICE, RUN)
    run_dir.mkdir(parents=True)
    ks_write_metadata(run_dir, ks_new_run(RUN))
    m = mounter(store, ALICE, allow_warnings=True)
    ours = {f"af-{w}-{i:02d}.bin": random.randbytes(random.randrange(1, 20_000))
            for w in range(4) for i in range(50)}
    theirs = {f"ks-{w}-{i:02d}.bin": random.randbytes(random.randrange(1, 20_000))
              for w in range(4) for i in range(50)}
    results = {}

    def promoter(w):
        for name, data in ours.items():
            if name.startswith(f"af-{w}-"):
                results[name] = promote_file(m, RUN, name, data)

    def kernel_server():
        for k, (name, data) in enumerate(theirs.items()):
            ks_promote(run_dir, name, data, pause=0.002 if k % 4 == 0 else 0.0)

    threads = [threading.Thread(target=promoter, args=(w,)) for w in range(4)]
    threads.append(threading.Thread(target=kernel_server))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    busy = time.monotonic() - t0
    failed = {n: r for n, r in results.items() if r != "ok"}
    why = [e["reason"] for e in promote_status(m.mnt) if e["file"] in failed]
    assert not failed, f"{len(failed)} promotions failed: {list(failed.items())[:5]}: {why[:5]}"
    wait_until(lambda: every_file_has_one_entry(run_dir), timeout=REPAIR_WAIT,
               what="every file of the run with exactly one entry")
    settled = time.monotonic() - t0
    meta = read_metadata(run_dir)
    entries = entries_by_name(meta)
    assert set(entries) == set(ours) | set(theirs)
    for name, data in ours.items():
        assert read_bytes(run_dir / name) == data
        assert entries[name]["agent_id"] == DEFAULT_AGENT, entries[name]
        assert entries[name]["size_bytes"] == len(data)
    rebuilt = sorted(n for n in theirs if entries[n]["agent_id"] != KS_AGENT)
    for name in theirs:
        assert entries[name]["agent_id"] in (KS_AGENT, "unknown"), entries[name]
        assert entries[name]["size_bytes"] == len(theirs[name])
    audited = {e["file"] for e in repairs(m, RUN)}
    assert set(rebuilt) <= audited, "a rebuilt entry without its audit row"
    print(f"\n  200 promote/ + 200 kernel-server files: {busy:.1f} s, settled after "
          f"{settled:.1f} s; repairs audited {len(audited)}, kernel-server entries "
          f"rebuilt from the file {len(rebuilt)}")


def test_a_half_written_metadata_json_is_waited_for(store, mounter):
    """The kernel-server is caught between its truncate and its write: the
    promotion waits for it and keeps both entries."""
    run_dir = store.run_dir(ALICE, RUN)
    run_dir.mkdir(parents=True)
    meta = ks_new_run(RUN)
    ks_write_metadata(run_dir, meta)
    m = mounter(store, ALICE)
    (run_dir / "ks.txt").write_bytes(b"kernel-server\n")
    meta["artifacts"].append({"filename": "ks.txt", "agent_id": KS_AGENT,
                              "generated_at": rfc3339(datetime.now(timezone.utc)),
                              "size_bytes": 14, "content_type": "text/plain"})
    writer = threading.Thread(target=ks_write_metadata, args=(run_dir, meta),
                              kwargs={"pause": 0.4})
    writer.start()
    time.sleep(0.1)      # now metadata.json is half written
    t0 = time.monotonic()
    assert promote_file(m, RUN, "ours.txt", b"ours\n") == "ok"
    waited = time.monotonic() - t0
    writer.join()
    assert waited >= 0.2, f"the promotion did not wait ({waited:.3f} s)"
    entries = entries_by_name(read_metadata(run_dir))
    assert set(entries) == {"ks.txt", "ours.txt"}
    assert entries["ks.txt"]["agent_id"] == KS_AGENT
    # The view never lost the run's metadata meanwhile.
    assert os.getxattr(m.mnt / RUN, XATTR_PREFIX + "workflow_id") == b"wf-ks"


def test_a_metadata_json_broken_for_good_is_refused_untouched(store, mounter):
    """Two kernel-server writers racing each other can leave metadata.json
    cut for good: promotion is refused with an error that says so, the file
    stays byte for byte, and nothing lands."""
    run_dir = store.run_dir(ALICE, RUN)
    run_dir.mkdir(parents=True)
    whole = serde_pretty(ks_new_run(RUN))
    broken = whole[: len(whole) // 2]
    (run_dir / "metadata.json").write_bytes(broken)
    time.sleep(1.1)      # it has stood still: not being written any more
    m = mounter(store, ALICE, expect_warnings=[RUN])
    t0 = time.monotonic()
    assert promote_file(m, RUN, "late.txt", b"late\n") == "EIO"
    assert time.monotonic() - t0 < 1.0, "a file broken long ago was waited for"
    assert (run_dir / "metadata.json").read_bytes() == broken
    assert not (run_dir / "late.txt").exists()
    refused = [e for e in promote_status(m.mnt) if e["file"] == "late.txt"]
    assert refused and refused[-1]["result"] == "EIO"
    assert "does not parse" in refused[-1]["reason"], refused[-1]
    assert "has not changed" in refused[-1]["reason"], refused[-1]


# ------------------------------------------------------------ repairs


def test_lost_entries_are_put_back_once_the_run_is_quiet(store, mounter):
    """What an unlocked writer loses comes back after a grace period: an
    entry of ours dropped by the kernel-server's rewrite (as promoted, from
    the index), a file it copied in without an entry (from the file, agent
    unknown), duplicates folded; each repair audited.  Deletions made on
    purpose (a file and its entry removed) stay deleted."""
    run_dir = store.run_dir(ALICE, RUN)
    run_dir.mkdir(parents=True)
    meta = ks_new_run(RUN)
    (run_dir / "gone.txt").write_bytes(b"to be deleted\n")
    meta["artifacts"].append({"filename": "gone.txt", "agent_id": KS_AGENT,
                              "generated_at": rfc3339(datetime.now(timezone.utc)),
                              "size_bytes": 14, "content_type": "text/plain"})
    ks_write_metadata(run_dir, meta)
    m = mounter(store, ALICE, allow_warnings=True)
    path = m.mnt / "promote" / RUN / "ours.csv"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"a,b\n1,2\n")
    os.setxattr(path, XATTR_PREFIX + "agent_id", b"analyst")
    os.close(fd)
    promoted = entries_by_name(read_metadata(run_dir))["ours.csv"]
    assert promoted["agent_id"] == "analyst"

    # The kernel-server: its read predates our commit, its write drops our entry;
    # it copies orphan.png in and loses its entry; it appends dup.txt twice; it
    # deletes gone.txt, file and entry.
    stale = json.loads((run_dir / "metadata.json").read_bytes())
    stale["artifacts"] = [a for a in stale["artifacts"] if a["filename"] != "ours.csv"]
    (run_dir / "orphan.png").write_bytes(b"\x89PNG orphan")
    (run_dir / "dup.txt").write_bytes(b"second\n")
    for agent in ("first", "second"):
        stale["artifacts"].append({"filename": "dup.txt", "agent_id": agent,
                                   "generated_at": rfc3339(datetime.now(timezone.utc)),
                                   "size_bytes": 7, "content_type": "text/plain"})
    (run_dir / "gone.txt").unlink()
    stale["artifacts"] = [a for a in stale["artifacts"] if a["filename"] != "gone.txt"]
    t0 = time.monotonic()
    ks_write_metadata(run_dir, stale)

    wait_until(lambda: every_file_has_one_entry(run_dir), timeout=REPAIR_WAIT,
               what="the run's entries repaired")
    took = time.monotonic() - t0
    assert took >= 1.5, f"repaired after {took:.2f} s: no grace for a writer at work"
    entries = entries_by_name(read_metadata(run_dir))
    assert set(entries) == {"ours.csv", "orphan.png", "dup.txt"}
    assert entries["ours.csv"] == promoted                       # as promoted
    orphan = entries["orphan.png"]
    assert orphan["agent_id"] == "unknown"
    assert orphan["size_bytes"] == len(b"\x89PNG orphan")
    assert orphan["content_type"] == system_content_type("orphan.png")
    assert ts_ns(orphan["generated_at"]) == os.stat(run_dir / "orphan.png").st_mtime_ns
    assert entries["dup.txt"]["agent_id"] == "second"            # the last one stays
    assert not (run_dir / "gone.txt").exists()                   # not undone
    assert xattrs(m.mnt / RUN / "ours.csv")[XATTR_PREFIX + "agent_id"] == b"analyst"
    # Audited just after metadata.json is written: a moment later.
    wait_until(lambda: {"ours.csv", "orphan.png", None} <= {e["file"] for e in repairs(m, RUN)},
               timeout=10, what="the repairs audited")
    rows = repairs(m, RUN)
    by_file = {e["file"]: e for e in rows if e["file"]}
    assert set(by_file) == {"ours.csv", "orphan.png"}, rows
    assert "as artifactfs promoted" in by_file["ours.csv"]["reason"]
    assert "from the file" in by_file["orphan.png"]["reason"]
    assert any(e["file"] is None and "duplicate" in e["reason"] for e in rows), rows
    print(f"\n  repaired {took:.2f} s after the kernel-server's write")


def test_a_run_without_metadata_json_is_left_alone(store, mounter):
    """metadata.json removed on purpose (rm through the mount): the files
    stay without one; no repair makes it up."""
    run_dir = store.run_dir(ALICE, RUN)
    run_dir.mkdir(parents=True)
    ks_promote(run_dir, "kept.bin", b"kept")
    m = mounter(store, ALICE)
    os.unlink(m.mnt / RUN / "metadata.json")
    time.sleep(3.5)     # past the grace period
    assert not (run_dir / "metadata.json").exists()
    assert not repairs(m, RUN)


# ------------------------------------------------------------ modes


@pytest.fixture
def shared_store():
    """A store another user can reach (pytest's own tmp dirs are private)."""
    root = Path(tempfile.mkdtemp(prefix="artifactfs-shared-"))
    root.chmod(0o755)
    try:
        yield Store(root / "store")
    finally:
        shutil.rmtree(root)


def read_as_kernel_server(path) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={KS_UID}", f"--regid={KS_UID}",
                           "--clear-groups", "cat", str(path)], capture_output=True)


@pytest.mark.parametrize("file_mode", [None, "0640"])
def test_promoted_files_follow_the_store_s_modes(shared_store, mounter, file_mode):
    """What lands is readable by a kernel-server running as another user:
    files take the store's 0644 (or -o file_mode=), and metadata.json keeps
    the mode and owner it had across artifactfs's rewrites."""
    store = shared_store
    run_dir = store.run_dir(ALICE, RUN)
    store.client_dir(ALICE).mkdir(parents=True)
    store.client_dir(ALICE).chmod(0o755)
    run_dir.mkdir()
    ks_promote(run_dir, "ks.txt", b"from the kernel-server\n")
    os.chown(run_dir / "metadata.json", KS_UID, KS_UID)
    os.chmod(run_dir / "metadata.json", 0o664)
    store.add_session_output(RUN, {"session.csv": b"a,b\n"})
    options = ["-o", f"file_mode={file_mode}"] if file_mode else []
    m = mounter(store, ALICE, *options)
    want = int(file_mode, 8) if file_mode else 0o644

    assert promote_file(m, RUN, "direct.bin", b"direct bytes") == "ok"
    assert write_close(m.mnt / "promote" / "req.json",
                       json.dumps({"run_id": RUN, "filename": "session.csv"}).encode()
                       ) == {"write": "ok", "close": "ok"}
    for name in ("direct.bin", "session.csv"):
        st = os.stat(run_dir / name)
        assert st.st_mode & 0o7777 == want, (name, oct(st.st_mode))
        if want & 0o004:
            r = read_as_kernel_server(run_dir / name)
            assert r.returncode == 0, r.stderr
            assert r.stdout == read_bytes(run_dir / name)
    st = os.stat(run_dir / "metadata.json")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o664, KS_UID, KS_UID)
    r = read_as_kernel_server(run_dir / "metadata.json")
    assert r.returncode == 0, r.stderr
    assert set(entries_by_name(json.loads(r.stdout))) == {"ks.txt", "direct.bin", "session.csv"}
