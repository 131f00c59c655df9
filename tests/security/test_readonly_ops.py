"""Every call that would change the store in place, on every kind of node.

The view is read-only (README, "What the view shows": rename, link,
symlink, mknod, setattr -- chmod, chown, truncate, utimes --, setxattr and
removexattr fail with EROFS).  promote/ only takes new files: the same
calls on promote/ itself, on promote/.status and inside promote/<run>/ are
refused too (EROFS; EPERM for rmdir promote/ and unlink of .status;
EACCES for opening .status for writing).  Each case also checks that the
store, and what the mount shows, did not change.
"""

from __future__ import annotations

import os

import pytest

from conftest import (ALICE, ALICE_RUN, BOB, REFUSALS, SHARED_RUN, StoreGuard, errno_of,
                      open_close, walk_view)

RUN_FILE = f"{SHARED_RUN}/report.md"
METADATA = f"{SHARED_RUN}/metadata.json"
RUN_DIR = SHARED_RUN


def _rename_away(mnt, rel):
    os.rename(mnt / rel, mnt / (rel + ".moved"))


def _rename_over(mnt, rel):
    # Replace the target with another file of the same run.
    os.rename(mnt / f"{SHARED_RUN}/data.csv", mnt / rel)


def _rename_into_promote(mnt, rel):
    os.rename(mnt / rel, mnt / "promote" / ALICE_RUN / "stolen")


def _link(mnt, rel):
    os.link(mnt / rel, mnt / (rel + ".link"))


def _link_into_promote(mnt, rel):
    os.link(mnt / rel, mnt / "promote" / ALICE_RUN / "linked")


def _symlink_in(mnt, rel):
    os.symlink("/etc/shadow", mnt / rel / "evil-link")


def _mknod_in(mnt, rel):
    os.mkfifo(mnt / rel / "evil-fifo")


def _mkdir_in(mnt, rel):
    os.mkdir(mnt / rel / "evil-dir")


def _create_in(mnt, rel):
    open_close(mnt / rel / "evil-file", os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def _chmod(mnt, rel):
    os.chmod(mnt / rel, 0o777)


def _chown(mnt, rel):
    os.chown(mnt / rel, 65534, 65534)


def _utimens(mnt, rel):
    os.utime(mnt / rel, ns=(1, 1))


def _setxattr(mnt, rel):
    os.setxattr(mnt / rel, "user.artifact.agent_id", b"bob-agent")


def _removexattr(mnt, rel):
    os.removexattr(mnt / rel, "user.artifact.workflow_id")


def _truncate(mnt, rel):
    os.truncate(mnt / rel, 0)


def _open_write(mnt, rel):
    open_close(mnt / rel, os.O_WRONLY)


def _open_trunc(mnt, rel):
    open_close(mnt / rel, os.O_RDONLY | os.O_TRUNC)


def _unlink(mnt, rel):
    os.unlink(mnt / rel)


def _rmdir(mnt, rel):
    os.rmdir(mnt / rel)


OPS = {
    "rename": _rename_away, "rename-over": _rename_over, "rename-into-promote": _rename_into_promote,
    "link": _link, "link-into-promote": _link_into_promote, "symlink-in": _symlink_in,
    "mknod-in": _mknod_in, "mkdir-in": _mkdir_in, "create-in": _create_in, "chmod": _chmod,
    "chown": _chown, "utimens": _utimens, "setxattr": _setxattr, "removexattr": _removexattr,
    "truncate": _truncate, "open-write": _open_write, "open-trunc": _open_trunc,
    "unlink": _unlink, "rmdir": _rmdir,
}

# (target id, relpath in the mount, op, expected errno)
CASES = [
    # a run file
    ("run-file", RUN_FILE, "rename", "EROFS"),
    ("run-file", RUN_FILE, "rename-over", "EROFS"),
    ("run-file", RUN_FILE, "rename-into-promote", "EROFS"),
    ("run-file", RUN_FILE, "link", "EROFS"),
    ("run-file", RUN_FILE, "link-into-promote", "EROFS"),
    ("run-file", RUN_FILE, "chmod", "EROFS"),
    ("run-file", RUN_FILE, "chown", "EROFS"),
    ("run-file", RUN_FILE, "utimens", "EROFS"),
    ("run-file", RUN_FILE, "setxattr", "EROFS"),
    ("run-file", RUN_FILE, "removexattr", "EROFS"),
    ("run-file", RUN_FILE, "truncate", "EROFS"),
    ("run-file", RUN_FILE, "open-write", "EROFS"),
    ("run-file", RUN_FILE, "open-trunc", "EROFS"),
    # metadata.json
    ("metadata", METADATA, "rename", "EROFS"),
    ("metadata", METADATA, "rename-over", "EROFS"),
    ("metadata", METADATA, "chmod", "EROFS"),
    ("metadata", METADATA, "truncate", "EROFS"),
    ("metadata", METADATA, "open-write", "EROFS"),
    ("metadata", METADATA, "setxattr", "EROFS"),
    # a run dir
    ("run-dir", RUN_DIR, "rename", "EROFS"),
    ("run-dir", RUN_DIR, "symlink-in", "EROFS"),
    ("run-dir", RUN_DIR, "mknod-in", "EROFS"),
    ("run-dir", RUN_DIR, "mkdir-in", "EROFS"),
    ("run-dir", RUN_DIR, "create-in", "EROFS"),
    ("run-dir", RUN_DIR, "chmod", "EROFS"),
    ("run-dir", RUN_DIR, "chown", "EROFS"),
    ("run-dir", RUN_DIR, "utimens", "EROFS"),
    ("run-dir", RUN_DIR, "setxattr", "EROFS"),
    ("run-dir", RUN_DIR, "removexattr", "EROFS"),
    # the root
    ("root", ".", "symlink-in", "EROFS"),
    ("root", ".", "mknod-in", "EROFS"),
    ("root", ".", "mkdir-in", "EROFS"),
    ("root", ".", "create-in", "EROFS"),
    ("root", ".", "chmod", "EROFS"),
    ("root", ".", "setxattr", "EROFS"),
    # promote/ itself
    ("promote", "promote", "rename", "EROFS"),
    ("promote", "promote", "rmdir", "EPERM"),
    ("promote", "promote", "symlink-in", "EROFS"),
    ("promote", "promote", "mknod-in", "EROFS"),
    ("promote", "promote", "chmod", "EROFS"),
    ("promote", "promote", "chown", "EROFS"),
    ("promote", "promote", "utimens", "EROFS"),
    ("promote", "promote", "setxattr", "EROFS"),
    ("promote", "promote", "removexattr", "EROFS"),
    # promote/.status
    ("status", "promote/.status", "open-write", "EACCES"),
    ("status", "promote/.status", "open-trunc", "EACCES"),
    ("status", "promote/.status", "truncate", "EROFS"),
    ("status", "promote/.status", "unlink", "EPERM"),
    ("status", "promote/.status", "rename", "EROFS"),
    ("status", "promote/.status", "chmod", "EROFS"),
    ("status", "promote/.status", "setxattr", "EROFS"),
    # inside promote/<run>/
    ("promote-run", f"promote/{ALICE_RUN}", "symlink-in", "EROFS"),
    ("promote-run", f"promote/{ALICE_RUN}", "mknod-in", "EROFS"),
    ("promote-run", f"promote/{ALICE_RUN}", "mkdir-in", "EPERM"),
    ("promote-run", f"promote/{ALICE_RUN}", "rename", "EROFS"),
]


@pytest.mark.parametrize("target,rel,op,expected", CASES,
                         ids=[f"{t}-{op}" for t, _, op, _ in CASES])
def test_modification_refused(world, mounter, target, rel, op, expected):
    """The call fails with the documented errno; the store and everything
    the mount shows are exactly as before."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    volatile = ("promote/.status",)
    seen = walk_view(m.mnt, volatile=volatile)
    guard = StoreGuard(world)
    assert errno_of(OPS[op], m.mnt, rel) == expected
    guard.check()
    assert walk_view(m.mnt, volatile=volatile) == seen


def test_read_only_mount_has_no_write_path(world, mounter):
    """-o ro (for sandboxes that only read): no promote/, and creating,
    deleting, renaming or setting anything fails with EROFS."""
    m = mounter(world, ALICE, "-o", "ro")
    guard = StoreGuard(world)
    assert "promote" not in os.listdir(m.mnt)
    assert errno_of(os.mkdir, m.mnt / "promote") == "EROFS"
    assert errno_of(os.unlink, m.mnt / RUN_FILE) == "EROFS"
    assert errno_of(os.rmdir, m.mnt / ALICE_RUN) == "EROFS"
    assert errno_of(_create_in, m.mnt, ".") == "EROFS"
    assert errno_of(_rename_away, m.mnt, RUN_FILE) == "EROFS"
    assert errno_of(_setxattr, m.mnt, RUN_FILE) == "EROFS"
    guard.check()


def test_nodelete_mount_refuses_deletion(world, mounter):
    """-o nodelete: rm of a file, of metadata.json and rm -r of a run fail
    with EPERM and change nothing."""
    m = mounter(world, ALICE, "-o", "nodelete", expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    assert errno_of(os.unlink, m.mnt / RUN_FILE) == "EPERM"
    assert errno_of(os.unlink, m.mnt / METADATA) == "EPERM"
    assert errno_of(os.rmdir, m.mnt / ALICE_RUN) == "EPERM"
    guard.check()


def test_delete_cannot_reach_other_tenant(world, mounter):
    """rm and rmdir of names that exist only for bob (a run, and a file in
    the colliding run): ENOENT, bob's tree untouched."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    from conftest import BOB_RUN
    assert errno_of(os.unlink, m.mnt / SHARED_RUN / "bob-secret.txt") == "ENOENT"
    assert errno_of(os.rmdir, m.mnt / BOB_RUN) == "ENOENT"
    assert errno_of(os.unlink, m.mnt / BOB_RUN / "bob-only.txt") == "ENOENT"
    guard.check()
    assert (world.root / "artifacts" / BOB / BOB_RUN / "bob-only.txt").exists()
