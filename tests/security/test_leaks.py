"""What a tenant can learn about others, or about the host.

Everything alice's processes can read is checked for bob's run ids, file
names, sizes and bytes, and for the store's host path: .status, every
extended attribute (listed or not), every listing and file, errno answers,
/proc/mounts, statfs figures and inode numbers.  (The daemon's own log goes
to the operator and may name the store path; the tenant never reads it.)
"""

from __future__ import annotations

import os

import pytest

from conftest import (ALICE, ALICE_RUN, BOB, BOB_MARK, BOB_RUN, LEGACY_RUN, REFUSALS,
                      SHARED_RUN, Store, StoreGuard, TENANT_SECRETS, errno_of, outcome,
                      promote_status, read_bytes, request, upload, walk_view)

BOB_PRIVATE_RUN = "bob-private-7d1e"
BOB_PRIVATE_FILE = "bob-private-file-55aa.txt"


def bob_activity(world, bob_mount):
    """bob promotes a run alice never hears of, and gets refusals of his own."""
    os.mkdir(bob_mount.mnt / "promote" / BOB_PRIVATE_RUN)
    assert outcome(upload(bob_mount.mnt, BOB_PRIVATE_RUN, BOB_PRIVATE_FILE,
                          BOB_MARK * 1000)) == "ok"
    upload(bob_mount.mnt, BOB_PRIVATE_RUN, ".bob-hidden", b"x")          # EINVAL
    request(bob_mount.mnt, {"run_id": ALICE_RUN, "files": ["bob-wants.txt"]})  # EACCES


def secrets_of_bob(world) -> list[bytes]:
    return [*TENANT_SECRETS[BOB], BOB_PRIVATE_RUN.encode(), BOB_PRIVATE_FILE.encode(),
            b"bob-hidden", b"bob-wants", str(world.root).encode(), b"/store/",
            BOB.encode() + b"/"]


def everything_alice_reads(m) -> bytes:
    """Every name, byte and xattr (listed, plus the unlisted stats one)
    alice's mount shows, concatenated."""
    out = []
    for rel, info in walk_view(m.mnt, volatile=()).items():
        out.append(rel.encode())
        out.append(info["data"] or b"")
        for k, v in info["xattrs"].items():
            out += [k.encode(), v]
    out.append(os.getxattr(m.mnt, "user.artifactfs.stats"))
    return b"\n".join(out)


def test_nothing_of_bob_or_the_host_path_in_alices_mount(world, mounter):
    """After bob's activity and alice's own attempts at bob's runs, nothing
    alice can read -- files, names, xattrs, .status -- holds bob's run
    ids, file names, bytes, or the store's host path.  (Run ids alice
    typed herself may come back to her in .status; bob's private run,
    which she never named, may not.)"""
    a = mounter(world, ALICE, expect_warnings=REFUSALS)
    b = mounter(world, BOB, expect_warnings=REFUSALS)
    bob_activity(world, b)
    # alice pokes at bob: by run id, and by a request for bob's session.
    assert errno_of(os.mkdir, a.mnt / "promote" / BOB_RUN) == "EACCES"
    assert outcome(request(a.mnt, {"run_id": BOB_RUN, "files": ["bob-session.txt"]})) == "EACCES"
    seen = everything_alice_reads(a)
    for secret in secrets_of_bob(world):
        if secret == BOB_RUN.encode():
            continue        # alice named it herself (see below)
        assert secret not in seen, f"{secret!r} visible in alice's mount"
    status = read_bytes(a.mnt / "promote" / ".status")
    for entry in promote_status(a.mnt):
        assert BOB not in (entry["reason"] or ""), entry    # "another tenant", never who
    assert BOB_RUN.encode() not in seen.replace(status, b"")


def test_errno_does_not_tell_foreign_runs_from_absent_ones(world, mounter):
    """In the view, a run id only bob has and one nobody has give the same
    answers (ENOENT for stat, open, getxattr, listdir, rmdir)."""
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)

    def answers(run):
        p = m.mnt / run
        return [errno_of(os.stat, p), errno_of(os.listdir, p), errno_of(os.rmdir, p),
                errno_of(os.getxattr, p, "user.artifact.workflow_id"),
                errno_of(read_bytes, p / "bob-only.txt"), errno_of(os.stat, m.mnt / "promote" / run)]

    assert answers(BOB_RUN) == answers("00000000-0000-4000-8000-000000000000") == \
        answers(LEGACY_RUN) == ["ENOENT"] * 6
    guard.check()


def test_mount_table_shows_no_store_path(world, mounter):
    """/proc/mounts and mountinfo show the mount as "artifactfs" with no
    trace of the store's host path."""
    m = mounter(world, ALICE)
    for table in ("/proc/self/mounts", "/proc/self/mountinfo"):
        lines = [line for line in open(table) if f" {m.mnt} " in line]
        assert lines, table
        for line in lines:
            assert str(world.root) not in line and "/store" not in line, line
            assert "artifactfs" in line.split()[0 if table.endswith("mounts") else -3], line


def test_stats_xattr_is_per_mount(world, mounter):
    """user.artifactfs.stats on alice's root counts alice's mount only:
    bob reading his files does not move it."""
    a = mounter(world, ALICE)
    b = mounter(world, BOB)
    before = os.getxattr(a.mnt, "user.artifactfs.stats")
    for _ in range(20):
        read_bytes(b.mnt / SHARED_RUN / "bob-secret.txt")
    assert os.getxattr(a.mnt, "user.artifactfs.stats") == before


@pytest.fixture
def quiet_store(tmpfs_dir) -> Store:
    """alice and bob on a tmpfs of their own: inode numbers are handed out
    in sequence and no one else allocates blocks or inodes there, so any
    figure alice sees move is bob's doing."""
    s = Store(tmpfs_dir / "store")
    s.add_run(ALICE, "alice-run", {"a.txt": b"alice"})
    s.add_run(BOB, "bob-run", {"b.txt": b"bob"})
    return s


def bob_stores_200_files(bob, prefix: str) -> None:
    """32 MiB in 200 files of 160 KiB, promoted through bob's mount."""
    for i in range(200):
        fd = os.open(bob.mnt / "promote" / "bob-run" / f"{prefix}{i}.bin",
                     os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"B" * (160 << 10))
        finally:
            os.close(fd)


def test_statfs_does_not_reveal_other_tenants_usage(quiet_store, mounter):
    """With a quota (the recommended set-up for sandboxes), statfs of
    alice's mount -- blocks, free blocks, files, free files -- does not
    move when bob stores 32 MiB in 200 files.

    statfs used to pass the store file system's figures through (seen
    during this work: df of a mount showed the host file system's blocks
    and inodes), so bob's bytes and file count showed in alice's df.  With
    a quota set, 59f4ca6 ("df shows the tenant's quota and usage when a
    quota is set") makes the figures alice's own; without a quota they are
    still the shared file system's (docs/security.md, residual risks)."""
    store = quiet_store
    a = mounter(store, ALICE, "-o", "quota_bytes=1073741824,quota_files=100000")
    b = mounter(store, BOB)

    def figures():
        st = os.statvfs(a.mnt)
        return (st.f_blocks * st.f_frsize, st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize,
                st.f_files, st.f_ffree, st.f_favail)

    before = figures()
    bob_stores_200_files(b, "f")
    assert len(os.listdir(store.run_dir(BOB, "bob-run"))) >= 200
    assert figures() == before


def test_statfs_without_quota_moves_only_in_coarse_steps(quiet_store, mounter):
    """Without a quota, df shows the shared file system, but its free space
    and free inodes only in steps of 1 GiB and 65,536 inodes (a sixteenth
    of a smaller file system, a thousandth of a larger one): bob storing
    32 MiB in 200 files changes alice's figures by at most one step, never
    by his bytes or his file count.

    Found by this suite: the free figures were passed through exactly, so
    alice could watch bob's every write.  Fixed: blur_shared_figures() in
    src/fs.c."""
    store = quiet_store
    a = mounter(store, ALICE)
    b = mounter(store, BOB)
    raw = os.statvfs(store.root)
    bytes_step = max(min(1 << 30, raw.f_blocks // 16 * raw.f_frsize),
                     raw.f_blocks // 1000 * raw.f_frsize)
    files_step = max(min(65536, raw.f_files // 16), raw.f_files // 1000)

    def figures():
        st = os.statvfs(a.mnt)
        return st.f_bfree * st.f_frsize, st.f_bavail * st.f_frsize, st.f_ffree, st.f_favail

    before = figures()
    for value in before[:2]:
        assert value % bytes_step == 0, (value, bytes_step)
    for value in before[2:]:
        assert value % files_step == 0, (value, files_step)
    bob_stores_200_files(b, "g")
    after = figures()
    steps = (bytes_step, bytes_step, files_step, files_step)
    for was, now, step in zip(before, after, steps):
        assert now % step == 0 and abs(now - was) <= step, (before, after)


def test_inode_numbers_do_not_count_other_tenants_files(quiet_store, mounter):
    """alice promotes a file, bob stores 100 (then 400) files, alice
    promotes another: the difference between alice's two inode numbers
    must not tell how many files bob stored meanwhile.

    Found by this suite: st_ino (and d_ino) were the backing inode numbers,
    which a file system like tmpfs hands out in sequence, so the gap
    between two of alice's files grew by exactly the number of inodes
    bob's files took.  Fixed: the view shows a keyed permutation of the
    backing numbers (src/ino_cipher.c, key in STORE/.artifactfs/inode-key),
    stable across remounts but opaque without the key."""
    store = quiet_store
    a = mounter(store, ALICE)
    bob_dir = store.run_dir(BOB, "bob-run")

    def gap(n_bob: int, tag: str) -> int:
        assert outcome(upload(a.mnt, "alice-run", f"{tag}-1.txt", b"1")) == "ok"
        first = os.stat(a.mnt / "alice-run" / f"{tag}-1.txt").st_ino
        for i in range(n_bob):          # the kernel-server writing bob's files
            (bob_dir / f"{tag}-{i}.bin").write_bytes(b"b")
        assert outcome(upload(a.mnt, "alice-run", f"{tag}-2.txt", b"2")) == "ok"
        return os.stat(a.mnt / "alice-run" / f"{tag}-2.txt").st_ino - first

    small, large = gap(100, "p"), gap(400, "q")
    assert abs((large - small) - 300) > 30, \
        f"inode gaps {small} and {large}: alice can count bob's 300 extra files"
