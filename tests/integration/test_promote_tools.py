"""promote/ with the tools agents use: writers that write a temporary file
and rename it onto its final name (rsync, Python's write-then-os.replace,
Go's write-fsync-rename), and temporary files that are deleted, reopened or
left behind.

A temporary name (a dot-file such as rsync's ".name.XXXXXX" or ".out.tmp";
SQLite's "-journal", "-wal", "-shm") is staged, never lands at close, can be
reopened and unlinked, and lands only when renamed onto a final name: that
rename is the promotion, durable when it returns.  Each test ends with the
store holding exactly the intended artifacts, byte for byte, one entry each,
and no temporary name anywhere.
"""

import errno
import os
import random
import subprocess
import threading
import time

import pytest

from conftest import (
    ALICE, ALICE_RUN, DEFAULT_AGENT, XATTR_PREFIX, entries_by_name, expected_files,
    promote_status, read_bytes, read_metadata, sh, staging_files, wait_until, xattrs,
)


def P(m, *parts):
    return m.mnt.joinpath("promote", *parts)


def run_files(store, run=ALICE_RUN) -> dict:
    """name -> bytes of the run's files in the store (metadata.json aside)."""
    run_dir = store.run_dir(ALICE, run)
    return {n: read_bytes(run_dir / n) for n in expected_files(run_dir) if n != "metadata.json"}


def assert_exactly(store, m, want: dict, run=ALICE_RUN):
    """The run holds want's files (plus those it had before, listed in
    want too), one entry each, no temporary name in the run, the view or
    staging."""
    files = run_files(store, run)
    assert files == want, sorted(set(files) ^ set(want))
    entries = entries_by_name(read_metadata(store.run_dir(ALICE, run)))
    assert sorted(entries) == sorted(want)
    for name, data in want.items():
        assert entries[name]["size_bytes"] == len(data), name
    assert not [n for n in os.listdir(m.mnt / run) if n.startswith(".")]
    staged = [n for n in staging_files(store, ALICE) if "/runs/" in n]
    assert not staged, staged


def existing(store, run=ALICE_RUN) -> dict:
    return run_files(store, run)


def test_rsync_with_its_default_temporary_names(store, mounter, tmp_path):
    """rsync without --inplace writes ".name.XXXXXX", sets its times and
    mode by name, then renames it: exit 0, every file promoted once."""
    src = tmp_path / "src"
    src.mkdir()
    data = {f"file-{i}.bin": random.randbytes(random.randrange(1, 300_000)) for i in range(8)}
    for name, content in data.items():
        (src / name).write_bytes(content)
    m = mounter(store, ALICE)
    before = existing(store)
    r = sh('rsync -rt "$1"/ "$2"/', src, P(m, ALICE_RUN))
    assert r.returncode == 0, r.stderr
    assert_exactly(store, m, {**before, **data})
    for name, content in data.items():
        assert xattrs(m.mnt / ALICE_RUN / name)[XATTR_PREFIX + "agent_id"] == DEFAULT_AGENT.encode()
    # Again, with changed content: the files are replaced, one entry each still.
    changed = {name: content[::-1] + b"!" for name, content in data.items()}
    for name, content in changed.items():
        (src / name).write_bytes(content)
    r = sh('rsync -r "$1"/ "$2"/', src, P(m, ALICE_RUN))
    assert r.returncode == 0, r.stderr
    assert_exactly(store, m, {**before, **changed})


def test_write_a_dot_tmp_then_os_replace_is_durable_at_the_rename(store, mounter):
    """Python's write to ".out.tmp" + os.replace: the file is in the store,
    with its entry, when os.replace returns; the temporary never is."""
    m = mounter(store, ALICE)
    before = existing(store)
    tmp, final = P(m, ALICE_RUN, ".out.tmp"), P(m, ALICE_RUN, "out.json")
    with open(tmp, "wb") as f:
        f.write(b'{"answer": 42}\n')
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    assert not (run_dir / ".out.tmp").exists() and not (run_dir / "out.json").exists()
    assert ".out.tmp" in os.listdir(P(m, ALICE_RUN))      # staged, shown in flight
    os.replace(tmp, final)
    assert read_bytes(run_dir / "out.json") == b'{"answer": 42}\n'   # no wait
    assert entries_by_name(read_metadata(run_dir))["out.json"]["size_bytes"] == 15
    assert read_bytes(m.mnt / ALICE_RUN / "out.json") == b'{"answer": 42}\n'
    assert_exactly(store, m, {**before, "out.json": b'{"answer": 42}\n'})


def test_go_style_write_fsync_rename_loop(store, mounter):
    """A writer that writes, fsyncs and closes a temporary, then renames it,
    one file after another (Go's renameio)."""
    m = mounter(store, ALICE)
    want = existing(store)
    for i in range(20):
        data = random.randbytes(random.randrange(1, 50_000))
        tmp = P(m, ALICE_RUN, f".state-{i}.json.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, P(m, ALICE_RUN, f"state-{i}.json"))
        want[f"state-{i}.json"] = data
    assert_exactly(store, m, want)


def test_a_temporary_renamed_while_open(store, mounter):
    """Renamed before its writer closed it: it lands at the rename; the
    close then returns 0; a write after the rename is refused (the
    artifact does not change in place)."""
    m = mounter(store, ALICE)
    before = existing(store)
    fd = os.open(P(m, ALICE_RUN, ".open.tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"written before the rename\n")
    os.rename(P(m, ALICE_RUN, ".open.tmp"), P(m, ALICE_RUN, "renamed.txt"))
    with pytest.raises(OSError) as exc:
        os.write(fd, b"after")
    assert exc.value.errno == errno.EROFS
    os.close(fd)
    assert_exactly(store, m, {**before, "renamed.txt": b"written before the rename\n"})


def test_temporaries_unlinked_reopened_or_moved(store, mounter):
    """A temporary can be reopened (and appended to), renamed to another
    temporary, and unlinked: only what is renamed onto a final name lands."""
    m = mounter(store, ALICE)
    before = existing(store)
    with open(P(m, ALICE_RUN, ".a.part"), "wb") as f:
        f.write(b"first half, ")
    with open(P(m, ALICE_RUN, ".a.part"), "ab") as f:     # reopened by name
        f.write(b"second half\n")
    os.utime(P(m, ALICE_RUN, ".a.part"), (1_700_000_000, 1_700_000_000))
    os.rename(P(m, ALICE_RUN, ".a.part"), P(m, ALICE_RUN, ".a.ready"))
    assert sorted(n for n in os.listdir(P(m, ALICE_RUN)) if n.startswith(".")) == [".a.ready"]
    os.rename(P(m, ALICE_RUN, ".a.ready"), P(m, ALICE_RUN, "a.txt"))
    with open(P(m, ALICE_RUN, "db.sqlite-journal"), "wb") as f:
        f.write(b"journal")
    os.unlink(P(m, ALICE_RUN, "db.sqlite-journal"))
    with pytest.raises(FileNotFoundError):
        os.stat(P(m, ALICE_RUN, "db.sqlite-journal"))
    assert_exactly(store, m, {**before, "a.txt": b"first half, second half\n"})
    assert os.stat(store.run_dir(ALICE, ALICE_RUN) / "a.txt").st_mtime == 1_700_000_000


def test_unlink_of_a_final_name_in_promote(store, mounter):
    """unlink of promote/<run>/<name> drops an upload still being written
    (nothing lands), and otherwise deletes the artifact, as rm of
    /<run>/<name> does; -o nodelete refuses that with EPERM."""
    m = mounter(store, ALICE, allow_warnings=True)
    before = existing(store)
    with open(P(m, ALICE_RUN, "gone.txt"), "wb") as f:
        f.write(b"landed, then removed")
    os.unlink(P(m, ALICE_RUN, "gone.txt"))
    fd = os.open(P(m, ALICE_RUN, "never.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, b"dropped")
    os.unlink(P(m, ALICE_RUN, "never.txt"))
    os.close(fd)
    assert_exactly(store, m, before)
    m.unmount()
    m = mounter(store, ALICE, "-o", "nodelete", allow_warnings=True)
    with open(P(m, ALICE_RUN, "kept.txt"), "wb") as f:
        f.write(b"kept")
    with pytest.raises(OSError) as exc:
        os.unlink(P(m, ALICE_RUN, "kept.txt"))
    assert exc.value.errno == errno.EPERM
    assert_exactly(store, m, {**before, "kept.txt": b"kept"})


def test_unlink_after_a_landing_close_before_the_release(store, mounter):
    """A close() landed the file; another descriptor of the same open (a
    dup) keeps the kernel from releasing it. unlink of the name then
    deletes the artifact, as after the release: the upload waits only for
    its release, it is no longer being written. (The kernel sends the
    release just after close() returns: an rm right after a cp raced it.)"""
    m = mounter(store, ALICE, allow_warnings=True)
    before = existing(store)
    fd = os.open(P(m, ALICE_RUN, "kept-open.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, b"landed at the first close")
    kept = os.dup(fd)
    try:
        os.close(fd)
        assert run_files(store, ALICE_RUN)["kept-open.txt"] == b"landed at the first close"
        os.unlink(P(m, ALICE_RUN, "kept-open.txt"))
        assert_exactly(store, m, before)
    finally:
        os.close(kept)
    assert_exactly(store, m, before)


def test_temporaries_left_behind_never_land(store, mounter):
    """A temporary nobody renames is discarded after the idle limit
    (-o temporary_idle=) and when the mount ends; it counts against the
    quota while it exists."""
    before = existing(store)
    used = sum(f.stat().st_size for f in store.client_dir(ALICE).rglob("*") if f.is_file())
    m = mounter(store, ALICE, "-o", "temporary_idle=1", "-o", f"quota_bytes={used + 5_000_000}",
                allow_warnings=True)
    with open(P(m, ALICE_RUN, ".forgotten"), "wb") as f:
        f.write(b"x" * 1000)
    with pytest.raises(OSError) as exc:
        with open(P(m, ALICE_RUN, ".too-big"), "wb") as f:
            f.write(b"y" * 10_000_000)
    assert exc.value.errno == errno.EDQUOT
    assert ".forgotten" in os.listdir(P(m, ALICE_RUN))
    time.sleep(1.5)
    # The next open sweeps what has been idle too long.
    with open(P(m, ALICE_RUN, ".fresh"), "wb") as f:
        f.write(b"fresh")
    assert ".forgotten" not in os.listdir(P(m, ALICE_RUN))
    assert ".fresh" in os.listdir(P(m, ALICE_RUN))
    m.unmount()
    assert run_files(store) == before
    assert staging_files(store, ALICE) == []


def test_four_rsyncs_into_one_run_at_once(store, mounter, tmp_path):
    """4 concurrent rsyncs, default options, into one run: each exits 0 and
    every file has exactly one entry."""
    m = mounter(store, ALICE)
    want = existing(store)
    sources = []
    for k in range(4):
        src = tmp_path / f"src{k}"
        src.mkdir()
        for i in range(15):
            data = random.randbytes(random.randrange(1, 100_000))
            (src / f"r{k}-{i}.dat").write_bytes(data)
            want[f"r{k}-{i}.dat"] = data
        sources.append(src)
    results = [None] * 4

    def rsync(k):
        results[k] = sh('rsync -r "$1"/ "$2"/', sources[k], P(m, ALICE_RUN))

    threads = [threading.Thread(target=rsync, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert r.returncode == 0, r.stderr
    assert_exactly(store, m, want)


# ------------------------------------------------- final-looking temporary names


def test_python_mkstemp_then_os_replace(store, mounter):
    """tempfile.mkstemp's "tmpXXXXXXXX" looks final: it is promoted at
    close, and the os.replace renames the artifact, file and entry together,
    its SHA-256 with it."""
    import tempfile
    m = mounter(store, ALICE)
    before = existing(store)
    fd, tmp = tempfile.mkstemp(dir=P(m, ALICE_RUN))
    os.write(fd, b"made with mkstemp\n")
    os.close(fd)
    sha = xattrs(m.mnt / ALICE_RUN / os.path.basename(tmp))[XATTR_PREFIX + "sha256"]
    os.replace(tmp, P(m, ALICE_RUN, "final.txt"))
    assert_exactly(store, m, {**before, "final.txt": b"made with mkstemp\n"})
    assert xattrs(m.mnt / ALICE_RUN / "final.txt")[XATTR_PREFIX + "sha256"] == sha
    renamed = [e for e in promote_status(m.mnt) if e["file"] == "final.txt"]
    assert renamed[-1]["reason"] == f"renamed from {os.path.basename(tmp)}", renamed


@pytest.mark.parametrize("prefix", ["tmp", "."])
def test_python_named_temporary_file_renamed_while_open(store, mounter, prefix):
    """NamedTemporaryFile(delete=False) written and renamed before it is
    closed: the rename lands it under the final name, whether its name
    looks final ("tmpXXXXXXXX") or temporary; the close then returns 0."""
    import tempfile
    m = mounter(store, ALICE)
    before = existing(store)
    with tempfile.NamedTemporaryFile(dir=P(m, ALICE_RUN), delete=False, prefix=prefix) as f:
        f.write(b"named temporary\n")
        f.flush()
        os.replace(f.name, P(m, ALICE_RUN, "named.txt"))
    assert_exactly(store, m, {**before, "named.txt": b"named temporary\n"})


@pytest.mark.parametrize("tool", ["sed", "zip"])
def test_tools_that_write_a_temporary_beside_the_file(store, mounter, tmp_path, tool):
    """sed -i writes "sedXXXXXX" and renames it over the file; zip writes
    "ziXXXXXX" and renames it to the archive: both exit 0, and the run holds
    the result alone."""
    m = mounter(store, ALICE)
    before = existing(store)
    src = tmp_path / "notes.txt"
    src.write_bytes(b"one\ntwo\n")
    if tool == "sed":
        with open(P(m, ALICE_RUN, "notes.txt"), "wb") as f:
            f.write(b"one\ntwo\n")
        r = sh('sed -i "s/two/2/" "$1"', P(m, ALICE_RUN, "notes.txt"))
        want = {"notes.txt": b"one\n2\n"}
    else:
        r = sh('cd "$1" && zip -q "$2" notes.txt', tmp_path, P(m, ALICE_RUN, "z.zip"))
        want = {"z.zip": None}
    assert r.returncode == 0, r.stderr
    if tool == "zip":
        want["z.zip"] = read_bytes(store.run_dir(ALICE, ALICE_RUN) / "z.zip")
        check = sh('unzip -p "$1" notes.txt', store.run_dir(ALICE, ALICE_RUN) / "z.zip")
        assert check.stdout == "one\ntwo\n", check.stderr
    assert_exactly(store, m, {**before, **want})


def test_a_renamed_artifact_is_completed_after_a_crash(store, mounter):
    """A rename's intent: the daemon killed after the file moved, before
    metadata.json followed, finishes the entry at the next mount."""
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    m = mounter(store, ALICE)
    with open(P(m, ALICE_RUN, "tmpx1y2z3"), "wb") as f:
        f.write(b"survives\n")
    m.unmount()
    # What a crash between the rename and the metadata leaves: the file moved,
    # its entry not, and the intent in the dead instance's work dir.
    os.rename(run_dir / "tmpx1y2z3", run_dir / "kept.txt")
    dead = store.root / ".artifactfs" / "staging" / ALICE / "1.1"
    (dead / "work").mkdir(parents=True)
    (dead / "work" / "intent.7").write_text(
        '{"run": "%s", "name": "kept.txt", "renamed_from": "tmpx1y2z3"}' % ALICE_RUN)
    m = mounter(store, ALICE, expect_warnings=["completed a rename"])
    entries = entries_by_name(read_metadata(run_dir))
    assert "kept.txt" in entries and "tmpx1y2z3" not in entries
    assert entries["kept.txt"]["size_bytes"] == len(b"survives\n")
    assert not dead.exists()


def test_sqlite_creates_a_database(store, mounter):
    """sqlite3 creating a database in promote/<run>/: its rollback journal
    is a temporary (written, synced, deleted), the database lands at the
    close, and reads back."""
    m = mounter(store, ALICE)
    before = existing(store)
    r = sh('sqlite3 "$1" "CREATE TABLE t (x); INSERT INTO t VALUES (42);"',
           P(m, ALICE_RUN, "db.sqlite"))
    assert r.returncode == 0, r.stderr
    db = store.run_dir(ALICE, ALICE_RUN) / "db.sqlite"
    check = sh('sqlite3 "file:$1?mode=ro" "SELECT x FROM t"', db)
    assert check.stdout.strip() == "42", check.stderr
    assert_exactly(store, m, {**before, "db.sqlite": read_bytes(db)})


RENAME_WRITER = r'''
import os, random, sys
run_dir, log_path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(log_path, "a") as log:
    for i in range(count):
        data = random.Random(i).randbytes(1000 + 37 * i)
        tmp = os.path.join(run_dir, ".w-%03d.tmp" % i)
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(run_dir, "w-%03d.dat" % i))
        log.write("w-%03d.dat\n" % i)
        log.flush()
        os.fsync(log.fileno())
'''


def test_sigkill_during_rename_writers_loses_nothing_renamed(store, mounter, tmp_path):
    """The daemon killed (-9) while rsync and a write-then-rename writer
    are at work: after a remount every file whose rename returned is in the
    run, whole, with its entry; no temporary name is anywhere, and what
    rsync had not renamed yet never landed."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"s-{i:03d}.bin").write_bytes(random.Random(i).randbytes(20_000 + 5_000 * i))
    run_dir = store.run_dir(ALICE, ALICE_RUN)
    before = existing(store)
    m = mounter(store, ALICE, allow_warnings=True)
    log = tmp_path / "renamed.log"
    log.touch()
    writer = subprocess.Popen(["/usr/bin/python3", "-c", RENAME_WRITER, str(P(m, ALICE_RUN)),
                               str(log), "400"], stderr=subprocess.DEVNULL)
    rsync = subprocess.Popen(["rsync", "-r", f"{src}/", str(P(m, ALICE_RUN))],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(log.read_text().split()) >= 20, timeout=20, what="20 renames done")
    m.sigkill()
    writer.wait(30)
    rsync.wait(30)
    m.unmount_dead()
    renamed = log.read_text().split()
    m = mounter(store, ALICE, allow_warnings=True)
    files = run_files(store)
    for name in renamed:
        i = int(name[2:5])
        assert files.get(name) == random.Random(i).randbytes(1000 + 37 * i), name
    for name, data in files.items():
        if name.startswith("s-"):
            assert data == (src / name).read_bytes(), f"{name} landed cut"
        elif name.startswith("w-"):
            i = int(name[2:5])
            assert data == random.Random(i).randbytes(1000 + 37 * i), name
        else:
            assert name in before, name
    assert not [n for n in os.listdir(run_dir) if n.startswith(".")]
    entries = entries_by_name(read_metadata(run_dir))
    assert sorted(entries) == sorted(files), sorted(set(entries) ^ set(files))
    staged = [n for n in staging_files(store, ALICE) if "/runs/" in n]
    assert not staged, staged
    print(f"\n  killed after {len(renamed)} acknowledged renames; "
          f"{sum(n.startswith('s-') for n in files)} of 40 rsync files had landed")


def test_sqlite_two_connections_in_one_process(store, mounter):
    """The process writing a database may open it again while it is open
    (SQLite's second connection, its journal deleted between): both write
    the one upload, which lands at the last close; another process opening
    it meanwhile still gets EBUSY."""
    import sqlite3
    m = mounter(store, ALICE, allow_warnings=True)
    before = existing(store)
    path = str(P(m, ALICE_RUN, "two.sqlite"))
    # Started before the database is opened: a child forked later would close
    # its copy of the descriptor at exec, and that close is a commit.
    other = subprocess.Popen(["/usr/bin/python3", "-c",
                              "import os, sys\n"
                              "path = sys.stdin.readline().strip()\n"
                              "try:\n    os.open(path, os.O_RDWR)\n    print('ok')\n"
                              "except OSError as e:\n    print(e.errno)"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    first = sqlite3.connect(path)
    first.execute("CREATE TABLE t (x)")
    first.execute("INSERT INTO t VALUES (1)")
    first.commit()
    second = sqlite3.connect(path)
    second.execute("INSERT INTO t VALUES (2)")
    second.commit()
    answer, _ = other.communicate(path + "\n", timeout=30)
    assert answer.strip() == str(errno.EBUSY), answer
    assert [r[0] for r in first.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
    second.close()
    first.close()
    db = store.run_dir(ALICE, ALICE_RUN) / "two.sqlite"
    check = sh('sqlite3 "file:$1?mode=ro" "SELECT group_concat(x) FROM t"', db)
    assert check.stdout.strip() == "1,2", check.stderr
    assert_exactly(store, m, {**before, "two.sqlite": read_bytes(db)})


# ------------------------------------------------------------- every tool

# tool -> (shell script: $1 = the source file, $2 = promote/<run>, $3 = the
# name to write; the expected bytes, from the source's)
TOOLS = {
    "cp": ('cp "$1" "$2/$3"', lambda src: src),
    "cp-a": ('cp -a "$1" "$2/$3"', lambda src: src),
    "install": ('install -m 644 "$1" "$2/$3"', lambda src: src),
    "dd": ('dd if="$1" of="$2/$3" bs=4k status=none', lambda src: src),
    "tee": ('tee "$2/$3" < "$1" > /dev/null', lambda src: src),
    "redirect": ('cat "$1" > "$2/$3"', lambda src: src),
    "append": ('cat "$1" > "$2/$3" && cat "$1" >> "$2/$3"', lambda src: src + src),
    "gzip-c": ('gzip -c -n "$1" > "$2/$3" && gzip -dc "$2/$3" | cmp - "$1"', None),
    "sort-o": ('sort "$1" -o "$2/$3"', lambda src: b"".join(sorted(src.splitlines(True)))),
    "curl-o": ('curl -s -o "$2/$3" "file://$1"', lambda src: src),
    "mv-from-outside": ('cp "$1" "$1.moving" && mv "$1.moving" "$2/$3"', lambda src: src),
    # A new file: vim editing an artifact in promote/ stops with E949 (the
    # upload is a copy under another inode), as it did before; see promote.md.
    "vim": ('vim -Nu NONE -i NONE -es -c "read $1" -c wq "$2/$3" < /dev/null && '
            'grep -q "line 150 of the source" "$2/$3"', None),
    "ed": ('cp "$1" "$2/$3" && printf \'1d\\nw\\nq\\n\' | ed -s "$2/$3"',
           lambda src: b"".join(src.splitlines(True)[1:])),
    "python-seeks": ("""/usr/bin/python3 -c '
import sys
data = open(sys.argv[1], "rb").read()
with open(sys.argv[2], "wb") as f:
    f.seek(len(data) // 2); f.write(data[len(data) // 2:])
    f.seek(0); f.write(data[:len(data) // 2])
' "$1" "$2/$3\"""", lambda src: src),
    "shutil-copy2": ("""/usr/bin/python3 -c 'import shutil, sys; shutil.copy2(sys.argv[1], sys.argv[2])' \\
                        "$1" "$2/$3\"""", lambda src: src),
}


@pytest.mark.parametrize("tool", list(TOOLS))
def test_every_tool_with_its_default_options(store, mounter, tmp_path, tool):
    """Each tool of the table in docs/promote.md writes into promote/<run>/
    with its default options, exits 0, and the run holds exactly the file
    meant, with its one entry."""
    script, expected = TOOLS[tool]
    src = tmp_path / "source.txt"
    src.write_bytes(b"".join(b"line %03d of the source\n" % i for i in range(300, 0, -1)))
    m = mounter(store, ALICE)
    before = existing(store)
    name = f"out-{tool}.txt"
    r = sh(script, src, P(m, ALICE_RUN), name)
    assert r.returncode == 0, r.stderr
    got = read_bytes(store.run_dir(ALICE, ALICE_RUN) / name)
    if expected:
        assert got == expected(src.read_bytes())
    assert_exactly(store, m, {**before, name: got})
