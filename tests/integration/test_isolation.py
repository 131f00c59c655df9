"""One tenant's mount never shows another tenant's names or bytes, nor
anything outside STORE/artifacts/<client>/: colliding run ids, planted
symlinks, special files, the legacy layout, sessions/."""

import os
import stat
import subprocess

import pytest

from conftest import (
    ALICE, BOB, BOB_RUN, LEGACY_MARK, LEGACY_RUN, NOBODY_SECRETS, SHARED_RUN,
    TENANT_SECRETS, DaemonFailed, expected_files, expected_runs, raw_readdir, read_bytes,
    wait_until, walk_view,
)

TENANTS = [(ALICE, BOB), (BOB, ALICE)]


def view_blob(mnt) -> bytes:
    """Every name, byte and xattr reachable in a mount, in one haystack."""
    parts = []
    for rel, info in walk_view(mnt).items():
        parts.append(rel.encode())
        if info["data"] is not None:
            parts.append(info["data"])
        for name, value in info["xattrs"].items():
            parts += [name.encode(), value]
    return b"\0".join(parts)


def assert_not_reachable(path):
    """Not statable, not openable, not listable, not readlink-able: ENOENT."""
    for op in (os.lstat, os.stat, os.readlink, os.listdir,
               lambda p: os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))):
        with pytest.raises(FileNotFoundError):
            op(path)


@pytest.mark.parametrize("client, other", TENANTS)
def test_colliding_run_id_shows_only_own_content(store, mounter, client, other):
    m = mounter(store, client)
    mine, theirs = store.run_dir(client, SHARED_RUN), store.run_dir(other, SHARED_RUN)
    listed = sorted(os.listdir(m.mnt / SHARED_RUN))
    assert listed == expected_files(mine)
    for name in listed:
        assert read_bytes(m.mnt / SHARED_RUN / name) == read_bytes(mine / name), name
    for name in set(expected_files(theirs)) - set(listed):
        assert_not_reachable(m.mnt / SHARED_RUN / name)
    assert (os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id")
            == store.run(client, SHARED_RUN).meta["workflow_id"].encode())
    for run in set(expected_runs(store, other)) - set(expected_runs(store, client)):
        assert_not_reachable(m.mnt / run)


@pytest.mark.parametrize("client, other", TENANTS)
def test_other_tenant_never_appears_anywhere_in_the_mount(store, mounter, client, other):
    m = mounter(store, client)
    blob = view_blob(m.mnt)
    for secret in TENANT_SECRETS[other] + NOBODY_SECRETS:
        assert secret not in blob, f"{secret!r} visible in {client}'s mount"
    for secret in TENANT_SECRETS[client]:      # the walk really saw this tenant's data
        assert secret in blob, f"{secret!r} missing from {client}'s mount"
    for secret in TENANT_SECRETS[other] + NOBODY_SECRETS:
        r = subprocess.run(["grep", "-rqF", "--", secret, m.mnt], capture_output=True)
        assert r.returncode == 1, (secret, r.stderr)
    own = subprocess.run(["grep", "-rqF", "--", TENANT_SECRETS[client][0], m.mnt])
    assert own.returncode == 0


def plant_symlinks(store) -> list[str]:
    run = store.run_dir(ALICE, SHARED_RUN)
    bob_file = store.run_dir(BOB, SHARED_RUN) / "bob-secret.txt"
    links = {
        "link-to-bob-relative": os.path.relpath(bob_file, run),
        "link-to-bob-absolute": str(bob_file),
        "link-to-passwd": "/etc/passwd",
        "link-to-own-file": "report.md",
        "link-dangling": "does-not-exist",
        "link-to-bob-run-dir": os.path.relpath(store.run_dir(BOB, BOB_RUN), run),
        "link-to-etc": "/etc",
    }
    for name, target in links.items():
        os.symlink(target, run / name)
    return list(links)


@pytest.mark.parametrize("when", ["before_mount", "while_mounted"])
def test_symlinks_planted_in_a_run_are_neither_listed_nor_openable(store, mounter, when):
    links = plant_symlinks(store) if when == "before_mount" else None
    m = mounter(store, ALICE)
    if when == "while_mounted":
        links = plant_symlinks(store)
        # sync point: a regular file created together with the links shows up
        (store.run_dir(ALICE, SHARED_RUN) / "sync.txt").write_bytes(b"sync")
        wait_until(lambda: "sync.txt" in os.listdir(m.mnt / SHARED_RUN), what="sync.txt visible")
    listed = os.listdir(m.mnt / SHARED_RUN)
    assert not set(links) & set(listed)
    assert not set(links) & set(raw_readdir(m.mnt / SHARED_RUN))
    for name in links:
        assert_not_reachable(m.mnt / SHARED_RUN / name)
    blob = view_blob(m.mnt)
    assert b"root:x:0:0" not in blob
    for secret in TENANT_SECRETS[BOB]:
        assert secret not in blob


def test_symlinked_run_dirs_are_hidden(store, mounter):
    cdir = store.client_dir(ALICE)
    links = {
        "linked-bob-run": os.path.relpath(store.run_dir(BOB, BOB_RUN), cdir),
        "linked-bob-run-abs": str(store.run_dir(BOB, BOB_RUN)),
        "linked-bob-shared": os.path.relpath(store.run_dir(BOB, SHARED_RUN), cdir),
        "linked-legacy": os.path.relpath(store.run_dir(None, LEGACY_RUN), cdir),
        "linked-etc": "/etc",
    }
    for name, target in links.items():
        os.symlink(target, cdir / name)
    m = mounter(store, ALICE)
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
    for name in links:
        assert_not_reachable(m.mnt / name)
    with pytest.raises(FileNotFoundError):
        open(m.mnt / "linked-etc" / "passwd", "rb")
    with pytest.raises(FileNotFoundError):
        open(m.mnt / "linked-bob-run" / "bob-only.txt", "rb")


def make_special(path, kind):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        os.mknod(path, stat.S_IFSOCK | 0o644)
    elif kind == "chardev":
        try:
            os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("no CAP_MKNOD here")
    elif kind == "subdir":
        path.mkdir()
        (path / "inner.txt").write_bytes(b"inner bytes")
    elif kind == "file":
        path.write_bytes(b"stray file")


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "subdir"])
def test_special_entries_in_a_run_are_hidden(store, mounter, kind):
    run = store.run_dir(ALICE, SHARED_RUN)
    make_special(run / f"hidden-{kind}", kind)
    m = mounter(store, ALICE)
    assert sorted(os.listdir(m.mnt / SHARED_RUN)) == expected_files(run)
    assert f"hidden-{kind}" not in raw_readdir(m.mnt / SHARED_RUN)
    assert_not_reachable(m.mnt / SHARED_RUN / f"hidden-{kind}")
    if kind == "subdir":
        with pytest.raises(FileNotFoundError):
            open(m.mnt / SHARED_RUN / "hidden-subdir" / "inner.txt", "rb")
    assert os.stat(m.mnt / SHARED_RUN).st_nlink == 2


@pytest.mark.parametrize("kind", ["file", "fifo", "socket"])
def test_non_directories_in_the_client_dir_are_hidden(store, mounter, kind):
    make_special(store.client_dir(ALICE) / f"stray-{kind}", kind)
    m = mounter(store, ALICE)
    assert sorted(os.listdir(m.mnt)) == sorted(expected_runs(store, ALICE) + ["promote"])
    assert_not_reachable(m.mnt / f"stray-{kind}")
    assert os.stat(m.mnt).st_nlink == 2 + len(expected_runs(store, ALICE)) + 1


@pytest.mark.parametrize("client", [ALICE, BOB])
def test_legacy_run_is_invisible(store, mounter, client):
    m = mounter(store, client)
    assert LEGACY_RUN not in os.listdir(m.mnt)
    assert_not_reachable(m.mnt / LEGACY_RUN)


def test_legacy_run_dir_mounted_as_a_client_shows_no_files(store, mounter):
    m = mounter(store, LEGACY_RUN)       # a valid id whose dir holds files, not runs
    assert os.listdir(m.mnt) == ["promote"]
    assert LEGACY_MARK not in view_blob(m.mnt)


def test_client_without_a_directory_gets_an_empty_view(store, mounter):
    m = mounter(store, "carol")
    assert os.listdir(m.mnt) == ["promote"]
    assert os.listdir(m.mnt / "promote") == [".status"]
    assert os.stat(m.mnt).st_nlink == 3


def test_client_dir_that_is_a_symlink_exposes_nothing(store, mounter):
    os.symlink("bob", store.client_dir("mallory"))
    m = mounter(store, "mallory", start=False, expect_errors=[".*"], allow_warnings=True)
    try:
        m.start()
    except DaemonFailed:
        assert m.log_lines("error"), "refused without an error line"
        return
    blob = view_blob(m.mnt)
    for secret in TENANT_SECRETS[BOB]:
        assert secret not in blob
    assert os.listdir(m.mnt) == ["promote"]
