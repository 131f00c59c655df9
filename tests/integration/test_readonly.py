"""Every mutating operation on the view that promote/ and deletion do not
allow fails with EROFS or EACCES, and neither the store nor the view
changes.

Allowed now, and tested in test_promote.py: creating files in
promote/<run>/ and requests directly in promote/, mkdir promote/<run>,
unlink of a run's files and rm -r of a run.  Still refused: writing or
creating anything outside promote/, setattr (chmod, chown, utimes,
truncate), rename, link, symlink and mknod on runs and files, xattrs of the
view, and any change to promote/ itself and promote/.status.  (chmod and
utimes of promote/<run> and of uploads, which tar and rsync do, are in
test_promote.py: they may be accepted and ignored.)"""

import errno
import os
import stat

import pytest

from conftest import (
    ALICE, ALICE_RUN, SHARED_RUN, read_bytes, staging_files, store_state, walk_view,
)

F = f"{SHARED_RUN}/report.md"
META = f"{SHARED_RUN}/metadata.json"
R = SHARED_RUN
PR = f"promote/{ALICE_RUN}"          # a run's upload directory
ALLOWED = {errno.EROFS, errno.EACCES}


def opener(rel, flags):
    def op(mnt):
        os.close(os.open(mnt / rel, flags, 0o644))
    return op


# name -> (operation on the mount root, extra errnos tolerated)
OPS = {
    "open_wronly": (opener(F, os.O_WRONLY), ()),
    "open_rdwr": (opener(F, os.O_RDWR), ()),
    "open_append": (opener(F, os.O_WRONLY | os.O_APPEND), ()),
    "open_wronly_trunc": (opener(F, os.O_WRONLY | os.O_TRUNC), ()),
    "open_rdonly_trunc": (opener(F, os.O_RDONLY | os.O_TRUNC), ()),
    "open_rdwr_metadata": (opener(META, os.O_RDWR), ()),
    "create_in_run": (opener(f"{R}/new.txt", os.O_WRONLY | os.O_CREAT), ()),
    "create_excl_in_run": (opener(f"{R}/new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL), ()),
    "create_rdonly_in_run": (opener(f"{R}/new.txt", os.O_RDONLY | os.O_CREAT), ()),
    "create_in_root": (opener("new.txt", os.O_WRONLY | os.O_CREAT), ()),
    "mkdir_in_root": (lambda m: os.mkdir(m / "newrun"), ()),
    "mkdir_in_run": (lambda m: os.mkdir(m / R / "newdir"), ()),
    "rmdir_run": (lambda m: os.rmdir(m / R), (errno.ENOTEMPTY,)),
    "rmdir_promote": (lambda m: os.rmdir(m / "promote"), (errno.ENOTEMPTY, errno.EPERM)),
    "rename_file_in_run": (lambda m: os.rename(m / F, m / R / "renamed.md"), ()),
    "rename_file_over_file": (lambda m: os.rename(m / F, m / R / "data.csv"), ()),
    "rename_file_to_other_run": (lambda m: os.rename(m / F, m / ALICE_RUN / "report.md"), ()),
    "rename_file_into_promote": (lambda m: os.rename(m / F, m / "promote" / "report.md"), ()),
    "rename_run": (lambda m: os.rename(m / R, m / "renamed-run"), ()),
    "rename_run_into_promote": (lambda m: os.rename(m / R, m / "promote" / R), ()),
    "rename_promote": (lambda m: os.rename(m / "promote", m / "promoted"), ()),
    "link_file_in_run": (lambda m: os.link(m / F, m / R / "hardlink.md"), ()),
    "link_file_into_promote": (lambda m: os.link(m / F, m / "promote" / "report.md"), ()),
    "symlink_in_run": (lambda m: os.symlink("report.md", m / R / "sym"), ()),
    "symlink_in_root": (lambda m: os.symlink(R, m / "sym"), ()),
    "symlink_in_promote": (lambda m: os.symlink("/etc/passwd", m / "promote" / "sym"), ()),
    "mkfifo_in_run": (lambda m: os.mkfifo(m / R / "fifo"), ()),
    "mknod_file_in_promote": (lambda m: os.mknod(m / "promote" / "node", stat.S_IFREG | 0o644), ()),
    "chmod_file": (lambda m: os.chmod(m / F, 0o600), ()),
    "chmod_run": (lambda m: os.chmod(m / R, 0o700), ()),
    "chmod_root": (lambda m: os.chmod(m, 0o700), ()),
    "chmod_promote": (lambda m: os.chmod(m / "promote", 0o777), ()),
    "chown_file": (lambda m: os.chown(m / F, 1234, 1234), ()),
    "chown_run": (lambda m: os.chown(m / R, 1234, 1234), ()),
    "utime_file": (lambda m: os.utime(m / F, ns=(10**9, 10**9)), ()),
    "utime_now_file": (lambda m: os.utime(m / F), ()),
    "utime_run": (lambda m: os.utime(m / R, ns=(10**9, 10**9)), ()),
    "utime_root": (lambda m: os.utime(m), ()),
    "truncate_file": (lambda m: os.truncate(m / F, 0), ()),
    "truncate_file_grow": (lambda m: os.truncate(m / F, 1 << 20), ()),
    "setxattr_file_new": (lambda m: os.setxattr(m / F, "user.test", b"x"), ()),
    "setxattr_file_replace": (lambda m: os.setxattr(m / F, "user.artifact.agent_id", b"evil"), ()),
    "setxattr_run": (lambda m: os.setxattr(m / R, "user.artifact.workflow_id", b"evil"), ()),
    "setxattr_root": (lambda m: os.setxattr(m, "user.test", b"x"), ()),
    "setxattr_promote": (lambda m: os.setxattr(m / "promote", "user.test", b"x"), ()),
    "removexattr_file": (lambda m: os.removexattr(m / F, "user.artifact.agent_id"), ()),
    "removexattr_run": (lambda m: os.removexattr(m / R, "user.artifact.status"), ()),
    # promote/ itself, its runs and .status (uploads and requests are allowed)
    "mkdir_in_promote_run": (lambda m: os.mkdir(m / PR / "sub"),
                             (errno.EPERM, errno.EINVAL, errno.ENOTSUP)),
    "rename_promote_run": (lambda m: os.rename(m / PR, m / "promote" / "renamed-run"), ()),
    "rename_file_into_promote_run": (lambda m: os.rename(m / F, m / PR / "report.md"), ()),
    "link_file_into_promote_run": (lambda m: os.link(m / F, m / PR / "report.md"), ()),
    "symlink_in_promote_run": (lambda m: os.symlink("/etc/passwd", m / PR / "sym.txt"), ()),
    "mkfifo_in_promote_run": (lambda m: os.mkfifo(m / PR / "fifo"), ()),
    "mknod_file_in_promote_run": (lambda m: os.mknod(m / PR / "node", stat.S_IFREG | 0o644), ()),
    "setxattr_promote_run_other": (lambda m: os.setxattr(m / PR, "user.test", b"x"),
                                   (errno.ENOTSUP, errno.EINVAL, errno.EPERM)),
    "open_status_wronly": (opener("promote/.status", os.O_WRONLY), ()),
    "open_status_trunc": (opener("promote/.status", os.O_RDONLY | os.O_TRUNC), ()),
    "unlink_status": (lambda m: os.unlink(m / "promote" / ".status"), (errno.EPERM,)),
    "truncate_status": (lambda m: os.truncate(m / "promote" / ".status", 0), ()),
    "chmod_status": (lambda m: os.chmod(m / "promote" / ".status", 0o666), ()),
    "rename_status": (lambda m: os.rename(m / "promote" / ".status", m / "promote" / "x.json"), ()),
}


@pytest.mark.parametrize("name", list(OPS))
def test_mutation_fails_and_changes_nothing(store, mounter, tmp_path, name):
    op, extra = OPS[name]
    # a refusal in promote/ may be logged (naming the run or file) and
    # recorded in promote/.status, whose bytes are therefore not compared
    m = mounter(store, ALICE, index=tmp_path / "index.db", expect_warnings=[ALICE_RUN, "promote"],
                expect_errors=[ALICE_RUN, "promote"])
    store_before = store_state(store)        # STORE/.artifactfs (staging) left out
    view_before = walk_view(m.mnt, volatile=("promote/.status",))
    with pytest.raises(OSError) as exc:
        op(m.mnt)
    err = exc.value.errno
    assert err in ALLOWED | set(extra), f"{name}: {errno.errorcode.get(err, err)} ({exc.value})"
    assert store_state(store) == store_before
    assert walk_view(m.mnt, volatile=("promote/.status",)) == view_before


def test_mount_browse_unmount_leaves_store_unchanged(store, mounter, tmp_path):
    """Only the daemon's own STORE/.artifactfs (staging) may appear."""
    before = store_state(store)
    m = mounter(store, ALICE, index=tmp_path / "index.db")
    walk_view(m.mnt)
    m.unmount()
    assert store_state(store) == before
    assert staging_files(store, ALICE) == []


def test_read_only_fd_cannot_write(store, alice):
    fd = os.open(alice.mnt / F, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x")
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)
    assert read_bytes(alice.mnt / F) == read_bytes(store.run_dir(ALICE, SHARED_RUN) / "report.md")
