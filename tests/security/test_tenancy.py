"""Promotion across tenants.

A run id belongs to the tenant that first promoted into it (recorded in the
index); a run dir under another tenant's artifacts/<client>/ and a legacy
artifacts/<run>/ count as someone else's (docs/promote.md, "Ownership").
Promoting into such a run, or requesting files from its sessions/<run>/,
fails with EACCES and changes nothing.  Colliding run ids (a run id both
tenants have) stay two separate runs.
"""

from __future__ import annotations

import os

import pytest

from conftest import (ALICE, ALICE_MARK, ALICE_RUN, BOB, BOB_MARK, BOB_RUN, BOB_SESSION_MARK,
                      LEGACY_MARK, LEGACY_RUN, REFUSALS, SHARED_RUN, StoreGuard,
                      check_status_safe, errno_of, outcome, read_bytes, request,
                      strict_metadata, upload)

FOREIGN = [("bob-only-run", BOB_RUN), ("legacy-run", LEGACY_RUN)]


@pytest.mark.parametrize("run", [r for _, r in FOREIGN], ids=[i for i, _ in FOREIGN])
def test_mkdir_into_foreign_run(world, attack_mount, run):
    """mkdir promote/<run of bob / legacy run>: EACCES, nothing staged."""
    m = attack_mount
    guard = StoreGuard(world)
    assert errno_of(os.mkdir, m.mnt / "promote" / run) == "EACCES"
    assert run not in os.listdir(m.mnt / "promote")
    entries = check_status_safe(m.mnt, forbidden=[BOB_MARK, LEGACY_MARK])
    assert entries[-1]["result"] == "EACCES"
    guard.check()


@pytest.mark.parametrize("run", [r for _, r in FOREIGN], ids=[i for i, _ in FOREIGN])
def test_upload_into_foreign_run(world, attack_mount, run):
    """Writing promote/<foreign run>/x.txt: the directory does not exist
    for alice (ENOENT), nothing lands anywhere."""
    m = attack_mount
    guard = StoreGuard(world)
    assert run not in os.listdir(m.mnt / "promote")
    steps = upload(m.mnt, run, "x.txt", b"alice writes into someone else's run")
    assert outcome(steps) == "ENOENT", steps
    guard.check()


@pytest.mark.parametrize("run", [r for _, r in FOREIGN], ids=[i for i, _ in FOREIGN])
def test_request_into_foreign_run(world, attack_mount, run):
    """A request naming bob's run (whose sessions/<run>/output/ holds bob's
    session file) or the legacy run: EACCES, no byte of bob's copied."""
    m = attack_mount
    world.add_session_output(run, {"victim.txt": BOB_SESSION_MARK})
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": run, "files": ["victim.txt"]})
    assert outcome(steps) == "EACCES", steps
    entries = check_status_safe(m.mnt, forbidden=[BOB_SESSION_MARK, BOB_MARK, LEGACY_MARK])
    assert entries[-1]["result"] == "EACCES"
    assert "another tenant" in entries[-1]["reason"]
    guard.check()


def test_request_for_other_tenants_session_of_shared_run(world, attack_mount):
    """sessions/ is not scoped by client: bob's session output for the run
    id both tenants have is in sessions/<SHARED_RUN>/output/ too.  alice
    can only promote into her own SHARED_RUN; she cannot pull bob's
    session file into bob's run, and the file she pulls lands in her own
    run only.  (That a shared session dir is readable by both owners of a
    colliding run id is the store's layout, see docs/security.md.)"""
    m = attack_mount
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": SHARED_RUN, "files": ["bob-shared.txt"]})
    assert outcome(steps) == "ok", steps
    rel = f"artifacts/{ALICE}/{SHARED_RUN}"
    guard.check(allow=[f"{rel}/bob-shared.txt", f"{rel}/metadata.json"])
    assert not (world.root / "artifacts" / BOB / SHARED_RUN / "bob-shared.txt").exists()


def test_run_owned_by_index_only(world, mounter):
    """bob promotes into a new run, then bob's run dir is removed behind
    the daemons' backs (say by the kernel-server): the index still records
    bob as its owner, so alice gets EACCES for mkdir, upload and request."""
    bob = mounter(world, BOB)
    assert outcome(upload(bob.mnt, "fresh-run", "b.txt", b"bob's")) in ("ENOENT", "ok")
    if not (world.root / "artifacts" / BOB / "fresh-run").exists():
        os.mkdir(bob.mnt / "promote" / "fresh-run")
        assert outcome(upload(bob.mnt, "fresh-run", "b.txt", b"bob's")) == "ok"
    bob.unmount()
    import shutil
    shutil.rmtree(world.root / "artifacts" / BOB / "fresh-run")
    world.add_session_output("fresh-run", {"s.txt": BOB_SESSION_MARK})
    m = mounter(world, ALICE, expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    assert errno_of(os.mkdir, m.mnt / "promote" / "fresh-run") == "EACCES"
    steps = request(m.mnt, {"run_id": "fresh-run", "files": ["s.txt"]})
    assert outcome(steps) == "EACCES", steps
    guard.check()


def test_run_claimed_by_other_tenant_after_staging(world, mounter):
    """alice makes promote/new-run, then bob promotes into new-run first:
    alice's upload into it is refused (EACCES) and lands nowhere."""
    a = mounter(world, ALICE, expect_warnings=REFUSALS)
    b = mounter(world, BOB)
    os.mkdir(a.mnt / "promote" / "new-run")
    assert outcome(upload(b.mnt, "new-run", "b.txt", b"bob first")) in ("ok", "ENOENT")
    if not (world.root / "artifacts" / BOB / "new-run").exists():
        os.mkdir(b.mnt / "promote" / "new-run")
        assert outcome(upload(b.mnt, "new-run", "b.txt", b"bob first")) == "ok"
    guard = StoreGuard(world)
    steps = upload(a.mnt, "new-run", "a.txt", b"alice second")
    assert outcome(steps) == "EACCES", steps
    assert not (world.root / "artifacts" / ALICE / "new-run").exists()
    guard.check()


def test_only_run_option_confines_promotion(world, mounter):
    """-o run=<run>: promote/ offers that run only; another run (even
    alice's own) is refused with EACCES by mkdir and by requests, and its
    promote/ path does not exist."""
    m = mounter(world, ALICE, "-o", f"run={ALICE_RUN}", expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    assert sorted(os.listdir(m.mnt / "promote")) == [".status", ALICE_RUN]
    assert errno_of(os.mkdir, m.mnt / "promote" / "other-run") == "EACCES"
    assert outcome(upload(m.mnt, SHARED_RUN, "x.txt", b"x")) == "ENOENT"
    world.add_session_output(SHARED_RUN, {"a.txt": b"a"})
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": SHARED_RUN, "files": ["a.txt"]})
    assert outcome(steps) == "EACCES", steps
    guard.check()


def test_colliding_run_id_writes_only_own_tree(world, mounter):
    """alice promotes into SHARED_RUN, which bob has too: the file lands
    in artifacts/alice/SHARED_RUN only; bob's run and bob's view of it are
    unchanged."""
    a = mounter(world, ALICE)
    b = mounter(world, BOB)
    bob_view = sorted(os.listdir(b.mnt / SHARED_RUN))
    guard = StoreGuard(world)
    assert outcome(upload(a.mnt, SHARED_RUN, "report.md", b"alice's new report")) == "ok"
    rel = f"artifacts/{ALICE}/{SHARED_RUN}"
    guard.check(allow=[f"{rel}/report.md", f"{rel}/metadata.json"])
    assert read_bytes(b.mnt / SHARED_RUN / "report.md").startswith(b"# Bob's report")
    assert sorted(os.listdir(b.mnt / SHARED_RUN)) == bob_view
    strict_metadata(read_bytes(world.root / rel / "metadata.json"), SHARED_RUN)


def test_uploads_in_flight_invisible_to_other_tenant(world, mounter):
    """While alice writes promote/SHARED_RUN/x.txt (a run id bob has too),
    bob's mount does not list it and cannot open or read it.  (No child
    process is started while the upload is open: a fork closes a copy of
    the descriptor, and every close commits what was written.)"""
    a = mounter(world, ALICE)
    b = mounter(world, BOB)
    fd = os.open(a.mnt / "promote" / SHARED_RUN / "x.txt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, ALICE_MARK + b" in flight")
        assert "x.txt" in os.listdir(a.mnt / "promote" / SHARED_RUN)
        assert "x.txt" not in os.listdir(b.mnt / "promote" / SHARED_RUN)
        assert errno_of(read_bytes, b.mnt / "promote" / SHARED_RUN / "x.txt") == "ENOENT"
        assert errno_of(os.stat, b.mnt / "promote" / SHARED_RUN / "x.txt") == "ENOENT"
        assert errno_of(os.getxattr, b.mnt / "promote" / SHARED_RUN / "x.txt",
                        "user.artifact.agent_id") == "ENOENT"
    finally:
        os.close(fd)
    assert read_bytes(world.root / "artifacts" / ALICE / SHARED_RUN / "x.txt") == \
        ALICE_MARK + b" in flight"
    assert not (world.root / "artifacts" / BOB / SHARED_RUN / "x.txt").exists()


def test_colliding_run_id_both_tenants_can_promote(world, mounter):
    """Both tenants have a run dir SHARED_RUN (a run id collision the store
    allows).  alice promoting into hers must not lock bob out of his: each
    tenant's own run dir makes the run its own.

    Found by this suite: run ownership (index table run_owners) is keyed by
    run id alone, and the first promotion claims it, so alice's first
    upload into her SHARED_RUN makes every later promotion of bob into his
    own SHARED_RUN fail with EACCES ("the run belongs to another tenant"):
    one tenant can deny another the use of its own run.  Fixed by b207e25
    ("a tenant's own run dir overrides another's claim")."""
    a = mounter(world, ALICE)
    b = mounter(world, BOB, expect_warnings=REFUSALS)
    assert outcome(upload(a.mnt, SHARED_RUN, "a.txt", b"alice first")) == "ok"
    guard = StoreGuard(world)
    steps = upload(b.mnt, SHARED_RUN, "b.txt", b"bob second")
    assert outcome(steps) == "ok", steps
    rel = f"artifacts/{BOB}/{SHARED_RUN}"
    guard.check(allow=[f"{rel}/b.txt", f"{rel}/metadata.json"])
    assert not (world.root / "artifacts" / ALICE / SHARED_RUN / "b.txt").exists()
