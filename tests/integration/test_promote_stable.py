"""promote/ across remounts: a backup that did not exclude promote/ sees
nothing changed when nothing was promoted, and listing promote/ makes
nothing in the store.

promote/ takes its times from the tenant dir, promote/.status from the
tenant's newest audit row, promote/<run> from the run dir; their inode
numbers come from the view's own range, the same at every mount.
promote/ lists exactly the tenant's live runs (and runs made with mkdir
on this mount) without making a staging directory for each.
"""

import os
import shutil
import stat
from pathlib import Path

from conftest import (
    ALICE, ALICE_RUN, LIVE_TIMEOUT, SHARED_RUN, expected_runs, promote_status, staging_dir,
    wait_until, write_close,
)
from test_backup import Restic, log_figures  # noqa: F401 (a fixture)

NEW_RUN = "7e57a11c-5e55-4a0b-9c1d-2f3e4a5b6c7d"      # exists nowhere yet


def attrs(st: os.stat_result) -> tuple:
    """What a backup tool compares (atime aside: reading changes it)."""
    return (stat.S_IFMT(st.st_mode), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
            st.st_nlink)


def view_attrs(mnt: Path) -> dict:
    """attrs() of every entry of the mount, promote/'s included."""
    out = {".": attrs(os.lstat(mnt))}
    for dirpath, dirnames, filenames in os.walk(mnt):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, mnt)] = attrs(os.lstat(path))
    return out


def staged_runs(store) -> list[str]:
    """The staging directories of promote/<run> of every instance of alice."""
    return sorted(p.name for p in staging_dir(store, ALICE).glob("*/runs/*"))


def test_promote_entries_are_the_same_after_a_remount(store, mounter, tmp_path):
    mnt = tmp_path / "mnt"
    m = mounter(store, ALICE, mnt=mnt)
    status = os.lstat(mnt / "promote" / ".status")
    assert status.st_mtime_ns == status.st_ctime_ns == 0, "no audit row yet: the epoch"
    first = view_attrs(mnt)
    assert {f"promote/{r}" for r in expected_runs(store, ALICE)} <= set(first)
    m.unmount()
    m = mounter(store, ALICE, mnt=mnt)
    assert view_attrs(mnt) == first

    # A promotion changes .status (its time is the newest audit row's) ...
    write_close(mnt / "promote" / ALICE_RUN / "new.txt", b"promoted\n")
    newest = promote_status(mnt)[-1]
    assert (newest["file"], newest["result"]) == ("new.txt", "ok")
    status = os.lstat(mnt / "promote" / ".status")
    assert status.st_mtime_ns > 0 and status.st_mtime_ns == status.st_ctime_ns
    promoted = view_attrs(mnt)
    assert promoted["promote/.status"] != first["promote/.status"]
    m.unmount()
    # ... and with a promotion before the mount, the next remount changes nothing.
    m = mounter(store, ALICE, mnt=mnt)
    assert view_attrs(mnt) == promoted
    m.unmount()
    mounter(store, ALICE, mnt=mnt)
    assert view_attrs(mnt) == promoted


def test_restic_sees_nothing_changed_in_promote_after_a_remount(store, mounter, tmp_path,
                                                               log_figures):
    mnt = tmp_path / "mnt"
    m = mounter(store, ALICE, mnt=mnt)
    write_close(mnt / "promote" / ALICE_RUN / "before.txt", b"promoted before\n")
    (tmp_path / "work").mkdir()
    restic = Restic(tmp_path / "work", mnt)
    full = restic.backup()
    assert "promote/.status" in full.new
    m.unmount()
    mounter(store, ALICE, mnt=mnt)
    again = restic.backup()
    log_figures(f"[restic, promote/ included: after remount] {again.figures}")
    assert (again.new, again.changed) == (set(), set())
    assert (again.raw["files_new"], again.raw["files_changed"],
            again.raw["dirs_new"], again.raw["dirs_changed"]) == (0, 0, 0, 0)


def test_listing_promote_makes_nothing_and_follows_the_store(store, mounter):
    for i in range(20):
        store.add_run(ALICE, f"run-{i:02d}", {"a.txt": b"a"}, workflow_id="wf",
                      user_directive="")
    m = mounter(store, ALICE)
    promote = m.mnt / "promote"

    def listed() -> set:
        return set(os.listdir(promote))

    runs = expected_runs(store, ALICE)
    assert listed() == set(runs) | {".status"}
    for run in runs:
        assert stat.S_ISDIR(os.stat(promote / run).st_mode)
    assert os.lstat(promote).st_nlink == 2 + len(runs)
    assert staged_runs(store) == [], "listing and stat of promote/ made staging directories"

    # A write stages its run; once released, the staging goes (the store has the run).
    write_close(promote / "run-03" / "b.txt", b"b")
    assert wait_until(lambda: staged_runs(store) == [])

    # Runs deleted behind the daemon's back leave promote/ ...
    for run in ("run-03", "run-07", SHARED_RUN):
        shutil.rmtree(store.run_dir(ALICE, run))
    gone = {"run-03", "run-07", SHARED_RUN}
    assert wait_until(lambda: not listed() & gone, timeout=LIVE_TIMEOUT), listed() & gone
    assert listed() == set(runs) - gone | {".status"}
    assert os.lstat(promote).st_nlink == 2 + len(runs) - len(gone)

    # ... while a run made with mkdir stays listed, staged, until its first file lands.
    os.mkdir(promote / NEW_RUN)
    assert NEW_RUN in listed() and staged_runs(store) == [NEW_RUN]
    ino = os.stat(promote / NEW_RUN).st_ino
    write_close(promote / NEW_RUN / "c.txt", b"c")
    assert os.stat(promote / NEW_RUN).st_ino == ino, "the directory changed under the writer"
    assert wait_until(lambda: staged_runs(store) == [])
    assert NEW_RUN in listed()
    assert os.lstat(promote).st_nlink == 2 + len(runs) - len(gone) + 1


def test_a_run_deleted_as_its_file_lands_leaves_promote(store, mounter):
    """A write's staging stays a moment after its file lands, for the next
    file.  A run deleted behind the daemon's back meanwhile takes it along:
    promote/ does not keep the run as if it had been made with mkdir."""
    m = mounter(store, ALICE)
    promote = m.mnt / "promote"
    for i, run in enumerate((ALICE_RUN, SHARED_RUN)):
        write_close(promote / run / f"last-{i}.txt", b"x")
        shutil.rmtree(store.run_dir(ALICE, run))     # before the run settles
    gone = {ALICE_RUN, SHARED_RUN}
    assert wait_until(lambda: staged_runs(store) == [], timeout=LIVE_TIMEOUT), staged_runs(store)
    assert wait_until(lambda: not set(os.listdir(promote)) & gone, timeout=LIVE_TIMEOUT)
    # A run made with mkdir stays, as ever, while the store lacks it.
    os.mkdir(promote / NEW_RUN)
    assert NEW_RUN in os.listdir(promote) and staged_runs(store) == [NEW_RUN]
