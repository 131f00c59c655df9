"""artifactctl, the admin tool: each command on a fixture store holding the
defects a RARO store collects (a legacy run, a duplicate entry, a lost
entry, an unparsable metadata.json, an expired run, a corrupted artifact),
its --json output parsed, its exit codes, bad arguments, and its changes
reaching a mounted daemon's view.
"""

import json
import os
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import (
    ALICE, BIN, File, Store, entries_by_name, read_metadata, rfc3339, serde_pretty,
    sha256_file, wait_until,
)
from test_kernel_server import KS_AGENT, ks_new_run, ks_promote

CTL = Path(os.environ.get("ARTIFACTCTL_BIN") or BIN.parent / "artifactctl")
BOB = "bob"
EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_ENVIRONMENT = 0, 1, 2, 3

CLEAN, DUP, LOST, BROKEN, EXPIRED, LEGACY = (
    "r-clean", "r-dup", "r-lost", "r-broken", "r-expired", "legacy-1")


def ctl(store, *args, expect=EXIT_OK, json_out=True):
    """Runs artifactctl on store; returns the parsed --json document (or the
    completed process with json_out=False) after checking the exit code."""
    argv = [str(CTL), "--store", str(store.root if isinstance(store, Store) else store)]
    argv += (["--json"] if json_out else []) + [str(a) for a in args]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1"})
    assert r.returncode == expect, (argv, r.returncode, r.stdout, r.stderr)
    assert "Sanitizer" not in r.stderr, r.stderr
    if not json_out:
        return r
    doc = json.loads(r.stdout)
    assert doc["exit_status"] == expect and doc["command"] == args[0]
    return doc


def data_files(store) -> dict:
    """Every data file of the store (not metadata.json): path -> SHA-256."""
    out = {}
    for dirpath, _, names in os.walk(store.artifacts):
        for n in names:
            if n != "metadata.json" and not n.startswith("."):
                p = Path(dirpath) / n
                out[str(p.relative_to(store.root))] = sha256_file(p)
    return out


def age(path, seconds: float = 30) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def problems(doc, client=None) -> set:
    return {(p["kind"], p["run"], p["file"]) for p in doc["problems"]
            if client is None or p["client"] == client}


@pytest.fixture
def defects(tmp_path) -> Store:
    """alice: a clean run, a run with a duplicate entry and an entry whose
    file is gone, a run that lost an entry to the kernel-server's unlocked
    read-modify-write, a metadata.json left half written; bob: an expired
    run; a legacy run."""
    s = Store(tmp_path / "store")
    s.add_run(ALICE, CLEAN, {"a.txt": b"alpha\n", "b.json": b"{}\n"})
    dup = s.add_run(ALICE, DUP, {"d.txt": b"dup\n", "gone.txt": b"x"})
    meta = json.loads((dup.path / "metadata.json").read_bytes())
    meta["artifacts"].append(dict(meta["artifacts"][0]))
    s.write_metadata(dup, meta)
    os.unlink(dup.path / "gone.txt")
    # Kernel-server promotions interleaved: three.bin's writer read
    # metadata.json before two.bin's wrote it, so two.bin's entry is lost.
    lost = s.run_dir(ALICE, LOST)
    lost.mkdir(parents=True)
    (lost / "metadata.json").write_bytes(serde_pretty(ks_new_run(LOST)))
    ks_promote(lost, "one.bin", b"1" * 100)
    stale = json.loads((lost / "metadata.json").read_bytes())
    ks_promote(lost, "two.bin", b"2" * 200)
    (lost / "three.bin").write_bytes(b"3" * 300)
    stale["artifacts"].append({"filename": "three.bin", "agent_id": KS_AGENT,
                               "generated_at": rfc3339(datetime.now(timezone.utc)),
                               "size_bytes": 300, "content_type": "application/octet-stream"})
    (lost / "metadata.json").write_bytes(serde_pretty(stale))
    broken = s.add_run(ALICE, BROKEN, {"k.txt": b"kept\n"})
    data = (broken.path / "metadata.json").read_bytes()
    (broken.path / "metadata.json").write_bytes(data[: len(data) // 2])
    s.add_run(BOB, EXPIRED, {"old.txt": b"old\n"}, expired=True)
    s.add_run(BOB, "r-live", {"new.txt": b"new\n"})
    s.add_run(None, LEGACY, {"l.txt": b"legacy\n"})
    for dirpath, _, names in os.walk(s.artifacts):
        for n in names:
            age(Path(dirpath) / n)
    return s


def test_ls_show_and_find(defects):
    doc = ctl(defects, "ls")
    clients = {c["client"]: c for c in doc["clients"]}
    assert set(clients) == {ALICE, BOB}, "the legacy run is not a tenant"
    assert clients[ALICE]["runs"] == 4 and clients[BOB]["runs"] == 2
    assert clients[BOB]["files"] == 2 and clients[BOB]["bytes"] == 8

    runs = {r["run"]: r for r in ctl(defects, "ls", "--client", BOB)["runs"]}
    assert set(runs) == {EXPIRED, "r-live"}
    assert runs[EXPIRED]["expired"] and not runs["r-live"]["expired"]

    doc = ctl(defects, "show", "--client", ALICE, CLEAN)
    assert doc["run"] == CLEAN and doc["status"] == "active" and not doc["expired"]
    assert {a["filename"]: a["file_size"] for a in doc["artifacts"]} == {"a.txt": 6, "b.json": 3}
    assert {a["content_type"] for a in doc["artifacts"]} == {"text/plain", "application/json"}

    text = ctl(defects, "show", "--client", ALICE, CLEAN, json_out=False).stdout
    assert CLEAN in text and "a.txt" in text
    assert ctl(defects, "show", "--client", BOB, CLEAN, expect=EXIT_PROBLEMS,
               json_out=False).stderr.count("\n") == 1

    src = defects.root.parent / "report.md"
    src.write_bytes(b"# report\n")
    ctl(defects, "promote", "--client", ALICE, "--run", "r-new", "--agent", "finder", src)
    sha = sha256_file(src)
    hits = ctl(defects, "find", "--sha256", sha)["artifacts"]
    assert [(h["client"], h["run"], h["filename"]) for h in hits] == [(ALICE, "r-new", "report.md")]
    assert [h["filename"] for h in ctl(defects, "find", "--agent", "finder")["artifacts"]] == \
        ["report.md"]
    wf = defects.run(BOB, "r-live").meta["workflow_id"]
    assert [h["run"] for h in ctl(defects, "find", "--workflow", wf)["artifacts"]] == ["r-live"]
    assert ctl(defects, "find", "--client", BOB, "--sha256", sha)["artifacts"] == []


def test_verify_reports_each_defect_and_repair_mends_them(defects):
    ctl(defects, "reindex")
    before = data_files(defects)
    doc = ctl(defects, "verify", expect=EXIT_PROBLEMS)
    found = problems(doc)
    assert ("duplicate_entry", DUP, None) in found
    assert ("missing_file", DUP, "gone.txt") in found
    assert ("missing_entry", LOST, "two.bin") in found
    assert ("missing_entry", LOST, "one.bin") not in found
    assert ("unparsable", BROKEN, None) in found
    assert ("legacy_run", LEGACY, None) in found
    assert not problems(doc, BOB), "bob's runs are sound (expired is not a defect)"
    assert not {p for p in found if p[1] == CLEAN}
    assert doc["runs"] == 6 and all(p["repairable"] for p in doc["problems"]
                                    if p["kind"] != "legacy_run")

    doc = ctl(defects, "repair")
    totals = {c["client"]: c for c in doc["clients"]}
    assert totals[ALICE]["entries_added"] >= 2      # two.bin, and k.txt in the rebuilt file
    assert totals[ALICE]["duplicates_folded"] == 1
    assert totals[ALICE]["entries_dropped"] == 1
    assert totals[ALICE]["metadata_rebuilt"] == 1
    assert data_files(defects) == before, "a repair never deletes or changes a data file"

    doc = ctl(defects, "verify", expect=EXIT_PROBLEMS)
    assert problems(doc) == {("legacy_run", LEGACY, None)}, "for migrate-legacy"
    doc = ctl(defects, "verify", "--client", ALICE)
    assert doc["problems"] == []
    meta = read_metadata(defects.run_dir(ALICE, LOST), retention_days=None)
    entries = entries_by_name(meta)
    assert set(entries) == {"one.bin", "two.bin", "three.bin"}
    assert entries["two.bin"]["agent_id"] == "unknown" and entries["two.bin"]["size_bytes"] == 200
    broken = defects.run_dir(ALICE, BROKEN)
    assert set(entries_by_name(read_metadata(broken, retention_days=None))) == {"k.txt"}
    assert not [n for n in os.listdir(broken) if n.startswith(".")], "nothing new in the run"
    kept = os.listdir(defects.root / ".artifactfs" / "repairs" / ALICE)
    assert [n.startswith(f"{BROKEN}.metadata.json.") for n in kept] == [True]
    rows = ctl(defects, "audit", "--client", ALICE)["audit"]
    assert {(r["action"], r["run"], r["file"]) for r in rows} >= {
        ("repair", LOST, "two.bin"), ("repair", DUP, "gone.txt")}


def test_read_data_finds_a_corrupted_artifact(defects):
    src = defects.root.parent / "model.bin"
    src.write_bytes(os.urandom(4096))
    ctl(defects, "promote", "--client", ALICE, "--run", CLEAN, src)
    path = defects.run_dir(ALICE, CLEAN) / "model.bin"
    st = os.stat(path)
    with open(path, "r+b") as f:      # bit rot: same size, same mtime
        f.seek(100)
        f.write(bytes([f.read(1)[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ("hash_mismatch", CLEAN, "model.bin") not in problems(
        ctl(defects, "verify", "--client", ALICE, expect=EXIT_PROBLEMS))
    doc = ctl(defects, "verify", "--client", ALICE, "--read-data", expect=EXIT_PROBLEMS)
    bad = [p for p in doc["problems"] if p["kind"] == "hash_mismatch"]
    assert [(p["run"], p["file"], p["repairable"]) for p in bad] == [(CLEAN, "model.bin", False)]
    assert doc["bytes_hashed"] >= 4096
    ctl(defects, "repair", "--client", ALICE)
    assert path.exists(), "a corrupted file is reported, never deleted"


def test_migrate_legacy(defects):
    legacy = defects.run_dir(None, LEGACY)
    defects.add_run(None, "legacy-2", {"m.txt": b"m\n"})
    defects.add_run(None, CLEAN, {"c.txt": b"c\n"})       # alice has a run of that id
    doc = ctl(defects, "migrate-legacy", "--to", ALICE, "--dry-run", expect=EXIT_PROBLEMS)
    assert {(r["run"], r["result"]) for r in doc["runs"]} == {
        (LEGACY, "dry_run"), ("legacy-2", "dry_run"), (CLEAN, "EEXIST")}, "refusals foreseen"
    assert legacy.is_dir()
    doc = ctl(defects, "migrate-legacy", "--to", ALICE, expect=EXIT_PROBLEMS)
    results = {r["run"]: r["result"] for r in doc["runs"]}
    assert results == {LEGACY: "ok", "legacy-2": "ok", CLEAN: "EEXIST"}
    assert not legacy.exists() and (defects.run_dir(ALICE, LEGACY) / "l.txt").read_bytes() == \
        b"legacy\n"
    assert (defects.artifacts / CLEAN / "c.txt").exists(), "a refused run stays where it was"
    assert (defects.run_dir(ALICE, CLEAN) / "a.txt").exists()
    assert LEGACY in {r["run"] for r in ctl(defects, "ls", "--client", ALICE)["runs"]}
    # Default client "public"; the run ids alice now owns are refused to others.
    defects.add_run(None, "legacy-3", {"p.txt": b"p\n"})
    doc = ctl(defects, "migrate-legacy", expect=EXIT_PROBLEMS)
    assert {(r["client"], r["run"], r["result"]) for r in doc["runs"]} == \
        {("public", "legacy-3", "ok"), ("public", CLEAN, "EACCES")}
    assert (defects.run_dir("public", "legacy-3") / "p.txt").exists()


def test_gc_expired(defects):
    doc = ctl(defects, "gc", "--expired", "--dry-run")
    assert [(r["client"], r["run"], r["result"]) for r in doc["runs"]] == \
        [(BOB, EXPIRED, "dry_run")]
    assert defects.run_dir(BOB, EXPIRED).is_dir()
    doc = ctl(defects, "gc", "--expired", "--client", BOB)
    assert [(r["run"], r["result"]) for r in doc["runs"]] == [(EXPIRED, "ok")]
    assert not defects.run_dir(BOB, EXPIRED).exists()
    assert defects.run_dir(BOB, "r-live").is_dir() and defects.run_dir(ALICE, CLEAN).is_dir()
    rows = ctl(defects, "audit", "--client", BOB)["audit"]
    assert [(r["action"], r["run"], r["result"]) for r in rows] == [("delete", EXPIRED, "ok")]
    assert ctl(defects, "gc", "--expired")["runs"] == []


def test_promote_and_audit(defects, tmp_path):
    files = [tmp_path / "notes.md", tmp_path / "data.csv"]
    files[0].write_bytes(b"# notes\n")
    files[1].write_bytes(b"a,b\n1,2\n")
    doc = ctl(defects, "promote", "--client", BOB, "--run", "r-cli", "--agent", "ops",
              "--workflow", "wf-ops", *files)
    assert [(p["filename"], p["result"], p["sha256"]) for p in doc["promoted"]] == \
        [(f.name, "ok", sha256_file(f)) for f in files]
    run = defects.run_dir(BOB, "r-cli")
    meta = read_metadata(run)
    assert meta["workflow_id"] == "wf-ops"
    assert {n: e["agent_id"] for n, e in entries_by_name(meta).items()} == \
        {"notes.md": "ops", "data.csv": "ops"}
    assert all(os.stat(run / f.name).st_mode & 0o777 == 0o644 for f in files)
    shm = Path("/dev/shm") / f"artifactctl-{os.getpid()}.txt"     # another file system
    shm.write_bytes(b"from tmpfs\n")
    try:
        ctl(defects, "promote", "--client", BOB, "--run", "r-cli", shm)
    finally:
        shm.unlink()
    assert (run / shm.name).read_bytes() == b"from tmpfs\n"
    assert not os.listdir(defects.root / ".artifactfs" / "staging" / BOB), "no staging left"

    bad = tmp_path / ".hidden"
    bad.write_bytes(b"x")
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    doc = ctl(defects, "promote", "--client", ALICE, "--run", "r-cli", bad, files[0],
              expect=EXIT_PROBLEMS)
    assert [p["result"] for p in doc["promoted"]] == ["EINVAL", "EACCES"], \
        "a bad name, and a run bob owns"
    doc = ctl(defects, "promote", "--client", BOB, "--run", "r-cli", fifo, expect=EXIT_PROBLEMS)
    assert [p["result"] for p in doc["promoted"]] == ["EINVAL"], "a FIFO is refused, not waited on"

    rows = ctl(defects, "audit", "--since", "0")["audit"]
    assert {(r["client"], r["file"], r["result"]) for r in rows} >= {
        (BOB, "notes.md", "ok"), (ALICE, ".hidden", "EINVAL"), (ALICE, "notes.md", "EACCES")}
    future = rfc3339(datetime.now(timezone.utc) + timedelta(days=1))
    assert ctl(defects, "audit", "--since", future)["audit"] == []
    text = ctl(defects, "audit", "--client", BOB, json_out=False).stdout
    assert "promote r-cli/notes.md ok" in text


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["ls", "--bogus"],
    ["ls", "--read-data"],
    ["ls", "extra"],
    ["show", "r-clean"],
    ["find"],
    ["find", "--agent", "a", "--workflow", "w"],
    ["find", "--sha256", "abc"],
    ["ls", "--client", "../etc"],
    ["gc"],
    ["promote", "--client", "alice", "--run", "r"],
    ["promote", "--client", "alice", "--run", "../x", "f"],
    ["promote", "--client", "alice", "--run", "r", "--retention", "0", "f"],
    ["promote", "--client", "alice", "--run", "r", "--file-mode", "9", "f"],
    ["audit", "--since", "yesterday"],
    ["--index", "", "ls"],
])
def test_bad_arguments_get_one_line_and_exit_2(defects, args):
    before = data_files(defects)
    r = ctl(defects, *args, expect=EXIT_USAGE, json_out=False)
    assert r.returncode == EXIT_USAGE
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("artifactctl: "), r.stderr
    assert r.stdout == ""
    assert data_files(defects) == before


def test_progress_on_a_terminal_and_plain_lines_elsewhere(defects):
    """Long commands redraw one status line on a terminal, and print plain
    lines, one per tenant, when stderr is a file or a pipe."""
    import pty
    leader, follower = pty.openpty()
    try:
        r = subprocess.run([str(CTL), "--store", str(defects.root), "verify"],
                           stdout=subprocess.PIPE, stderr=follower, timeout=60)
        os.close(follower)
        follower = -1
        tty = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            tty += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert r.returncode == EXIT_PROBLEMS
    assert b"\r\x1b[K" in tty and b"verifying client alice" in tty
    plain = ctl(defects, "verify", expect=EXIT_PROBLEMS, json_out=False).stderr
    assert plain.splitlines() == ["artifactctl: verified client alice: 4 runs",
                                  "artifactctl: verified client bob: 2 runs"]


def test_an_unusable_store_exits_3(tmp_path):
    r = subprocess.run([str(CTL), "--store", str(tmp_path / "nowhere"), "ls"],
                       capture_output=True, text=True)
    assert r.returncode == EXIT_ENVIRONMENT and "nowhere" in r.stderr
    r = subprocess.run([str(CTL), "ls"], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if k != "ARTIFACTFS_STORE"})
    assert r.returncode == EXIT_USAGE and "--store" in r.stderr


def test_a_mounted_view_follows(defects, mounter):
    m = mounter(defects, ALICE, "-o", "show_expired", expect_warnings=[r"metadata.json does not parse"])
    src = defects.root.parent / "live.txt"
    src.write_bytes(b"live\n")
    ctl(defects, "promote", "--client", ALICE, "--run", CLEAN, src)
    wait_until(lambda: (m.mnt / CLEAN / "live.txt").exists(), what="promoted file shown")
    assert (m.mnt / CLEAN / "live.txt").read_bytes() == b"live\n"

    ctl(defects, "migrate-legacy", "--to", ALICE)
    wait_until(lambda: (m.mnt / LEGACY / "l.txt").exists(), what="migrated run shown")

    defects.add_run(ALICE, "r-old", {"o.txt": b"o\n"}, expired=True)
    wait_until(lambda: (m.mnt / "r-old").exists(), what="expired run shown")
    ctl(defects, "gc", "--expired", "--client", ALICE)
    wait_until(lambda: not (m.mnt / "r-old").exists(), what="collected run gone")

    ctl(defects, "repair", "--client", ALICE)
    wait_until(lambda: "two.bin" in {
        e["filename"] for e in json.loads((m.mnt / LOST / "metadata.json").read_bytes())
        ["artifacts"]}, what="repaired metadata.json shown")
    doc = ctl(defects, "verify", "--client", ALICE)
    assert doc["problems"] == []
