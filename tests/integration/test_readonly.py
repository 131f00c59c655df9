"""Every mutating operation on the view fails with EROFS or EACCES, and
neither the store nor the view changes."""

import errno
import os
import stat

import pytest

from conftest import ALICE, ALICE_RUN, SHARED_RUN, read_bytes, tree_snapshot, walk_view

F = f"{SHARED_RUN}/report.md"
META = f"{SHARED_RUN}/metadata.json"
R = SHARED_RUN
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
    "create_in_promote": (opener("promote/new.txt", os.O_WRONLY | os.O_CREAT), ()),
    "mkdir_in_root": (lambda m: os.mkdir(m / "newrun"), ()),
    "mkdir_in_run": (lambda m: os.mkdir(m / R / "newdir"), ()),
    "mkdir_in_promote": (lambda m: os.mkdir(m / "promote" / "newdir"), ()),
    "unlink_file": (lambda m: os.unlink(m / F), ()),
    "unlink_metadata": (lambda m: os.unlink(m / META), ()),
    "rmdir_run": (lambda m: os.rmdir(m / R), (errno.ENOTEMPTY,)),
    "rmdir_promote": (lambda m: os.rmdir(m / "promote"), ()),
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
}


@pytest.mark.parametrize("name", list(OPS))
def test_mutation_fails_and_changes_nothing(store, mounter, tmp_path, name):
    op, extra = OPS[name]
    m = mounter(store, ALICE, index=tmp_path / "index.db")
    store_before = tree_snapshot(store.root)
    view_before = walk_view(m.mnt)
    with pytest.raises(OSError) as exc:
        op(m.mnt)
    err = exc.value.errno
    assert err in ALLOWED | set(extra), f"{name}: {errno.errorcode.get(err, err)} ({exc.value})"
    assert tree_snapshot(store.root) == store_before
    assert walk_view(m.mnt) == view_before


def test_mount_browse_unmount_leaves_store_unchanged(store, mounter, tmp_path):
    before = tree_snapshot(store.root)
    m = mounter(store, ALICE, index=tmp_path / "index.db")
    walk_view(m.mnt)
    m.unmount()
    assert tree_snapshot(store.root) == before


def test_read_only_fd_cannot_write(store, alice):
    fd = os.open(alice.mnt / F, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as exc:
            os.write(fd, b"x")
        assert exc.value.errno == errno.EBADF
    finally:
        os.close(fd)
    assert read_bytes(alice.mnt / F) == read_bytes(store.run_dir(ALICE, SHARED_RUN) / "report.md")
