"""One daemon for every tenant (-o all_tenants), bind-mounted per sandbox.

The daemon shows /<client>/ for each tenant directory of the store, each
with its own runs and promote/.  A sandbox is given one of them with a
bind mount; these tests check what that gives it, and what it must not:
two bubblewrap sandboxes as different unprivileged users on one daemon at
once, each listing, promoting and attacking the other; tenants appearing
and going while mounted; numbers, owners, quotas and statistics kept per
tenant.  (The whole security suite runs once more with every tenant mount
bind-mounted from an all-tenants daemon: ARTIFACTFS_TEST_ALL_TENANTS=1 in
tools/test.)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import (BIN, REFUSALS, ALICE, ALICE_RUN, BOB, BOB_MARK, BOB_RUN, LEGACY_RUN,
                      SHARED_RUN, StoreGuard, TENANT_SECRETS, bind_mount, errno_of,
                      fusermount_u, is_mounted, outcome, read_bytes, strict_metadata,
                      wait_until, write_close)

ALICE_UID = 65534        # nobody
BOB_UID = 65533
SANDBOX_OPTIONS = "allow_other,default_permissions,nosuid,nodev"


@pytest.fixture
def public_dir():
    """A directory the sandbox users can reach (pytest's are 0700 root),
    for the all-tenants mount and the binds.  Request it before mounter."""
    d = tempfile.mkdtemp(prefix="artifactfs-all-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def own_tenant_dirs(world):
    """Each tenant directory owned by its sandbox user: its entries show
    that owner (no -o uid= given), so each user may promote into its own."""
    os.chown(world.root / "artifacts" / ALICE, ALICE_UID, ALICE_UID)
    os.chown(world.root / "artifacts" / BOB, BOB_UID, BOB_UID)


def test_root_lists_tenants_only(world, mounter):
    """The root lists alice and bob (not the legacy run, not .artifactfs),
    can be crossed but not listed by others (0711); each tenant directory
    lists its own runs and promote/, with link counts that match."""
    m = mounter(world, None, "-o", "all_tenants")
    assert sorted(os.listdir(m.mnt)) == [ALICE, BOB]
    root = os.stat(m.mnt)
    assert stat.S_IMODE(root.st_mode) == 0o711 and root.st_ino == 1
    assert root.st_nlink == 4
    assert sorted(os.listdir(m.mnt / ALICE)) == sorted([ALICE_RUN, SHARED_RUN, "promote"])
    assert sorted(os.listdir(m.mnt / BOB)) == sorted([BOB_RUN, SHARED_RUN, "promote"])
    assert os.stat(m.mnt / ALICE).st_nlink == 5
    assert errno_of(os.stat, m.mnt / LEGACY_RUN) == "ENOENT"
    assert errno_of(os.stat, m.mnt / ".artifactfs") == "ENOENT"
    assert errno_of(os.stat, m.mnt / "promote") == "ENOENT"
    assert read_bytes(m.mnt / BOB / SHARED_RUN / "bob-secret.txt").startswith(BOB_MARK)
    assert "bob-secret.txt" not in os.listdir(m.mnt / ALICE / SHARED_RUN)
    assert errno_of(os.mkdir, m.mnt / "mallory") in ("EACCES", "EROFS")
    assert errno_of(os.rmdir, m.mnt / BOB) == "EACCES"


def test_numbers_are_per_tenant_and_stable(world, mounter):
    """Each tenant's directory, promote/ and promote/.status have numbers
    of their own, never another tenant's, the same in the root's listing
    as in stat, and the same after a remount."""
    def numbers(mnt):
        out = {}
        for client in (ALICE, BOB):
            for rel in ("", "promote", "promote/.status", f"promote/{SHARED_RUN}",
                        SHARED_RUN):
                out[f"{client}/{rel}"] = os.stat(mnt / client / rel).st_ino
        return out

    m = mounter(world, None, "-o", "all_tenants")
    first = numbers(m.mnt)
    assert len(set(first.values())) == len(first), first
    # The root's listing says the numbers stat says (find, tar and du compare them).
    assert {e.name: e.inode() for e in os.scandir(m.mnt)} == \
        {c: first[f"{c}/"] for c in (ALICE, BOB)}
    m.unmount()
    m2 = mounter(world, None, "-o", "all_tenants")
    assert numbers(m2.mnt) == first


def test_each_tenant_promotes_into_its_own_store(world, mounter):
    """A file written into /alice/promote/<run>/ lands in alice's run only,
    one into /bob/promote/<same run>/ in bob's; each .status tells its own
    tenant's outcomes only."""
    m = mounter(world, None, "-o", "all_tenants", expect_warnings=REFUSALS)
    assert outcome(write_close(m.mnt / ALICE / "promote" / SHARED_RUN / "a.txt",
                               b"for alice\n")) == "ok"
    assert outcome(write_close(m.mnt / BOB / "promote" / SHARED_RUN / "b.txt",
                               b"for bob\n")) == "ok"
    alice_run = world.root / "artifacts" / ALICE / SHARED_RUN
    bob_run = world.root / "artifacts" / BOB / SHARED_RUN
    assert read_bytes(alice_run / "a.txt") == b"for alice\n" and not (alice_run / "b.txt").exists()
    assert read_bytes(bob_run / "b.txt") == b"for bob\n" and not (bob_run / "a.txt").exists()
    strict_metadata(read_bytes(alice_run / "metadata.json"), SHARED_RUN)
    strict_metadata(read_bytes(bob_run / "metadata.json"), SHARED_RUN)
    assert read_bytes(m.mnt / ALICE / SHARED_RUN / "a.txt") == b"for alice\n"
    assert "a.txt" not in os.listdir(m.mnt / BOB / SHARED_RUN)
    alice_status = read_bytes(m.mnt / ALICE / "promote" / ".status")
    bob_status = read_bytes(m.mnt / BOB / "promote" / ".status")
    assert b"a.txt" in alice_status and b"b.txt" not in alice_status
    assert b"b.txt" in bob_status and b"a.txt" not in bob_status
    # bob's run that alice does not have: not hers to promote into.
    assert errno_of(os.mkdir, m.mnt / ALICE / "promote" / BOB_RUN) == "EACCES"


def test_quota_owner_and_stats_per_tenant(world, mounter):
    """quota_files counts each tenant's own files; owners follow each
    tenant directory's owner in the store; the statistics xattr counts
    each tenant's reads, the root's all of them."""
    own_tenant_dirs(world)
    m = mounter(world, None, "-o", "all_tenants,quota_files=8", expect_warnings=REFUSALS)
    assert os.stat(m.mnt / ALICE / ALICE_RUN / "notes.txt").st_uid == ALICE_UID
    assert os.stat(m.mnt / BOB / "promote").st_uid == BOB_UID
    assert os.stat(m.mnt).st_uid == 0
    # alice holds 10 files (over her quota), bob 4: bob may still promote.
    assert outcome(write_close(m.mnt / ALICE / "promote" / ALICE_RUN / "more.txt",
                               b"x")) == "EDQUOT"
    assert outcome(write_close(m.mnt / BOB / "promote" / BOB_RUN / "more.txt", b"y")) == "ok"
    assert os.statvfs(m.mnt / BOB).f_files == 8

    def stats(path):
        return json.loads(os.getxattr(path, "user.artifactfs.stats"))

    read_bytes(m.mnt / ALICE / ALICE_RUN / "notes.txt")
    read_bytes(m.mnt / ALICE / SHARED_RUN / "report.md")
    read_bytes(m.mnt / BOB / BOB_RUN / "bob-only.txt")
    assert stats(m.mnt / ALICE)["opens"] == 2
    assert stats(m.mnt / BOB)["opens"] == 1
    assert stats(m.mnt)["opens"] == 3


def test_tenants_come_and_go_while_mounted(world, mounter):
    """A tenant directory created behind the daemon's back shows within a
    second, with its runs and a working promote/; one removed goes."""
    m = mounter(world, None, "-o", "all_tenants")
    assert sorted(os.listdir(m.mnt)) == [ALICE, BOB]
    assert errno_of(os.stat, m.mnt / "carol") == "ENOENT"   # cached as absent
    carol_run = "5d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6"
    world.add_run("carol", carol_run, {"c.txt": b"carol's\n"})
    assert wait_until(lambda: "carol" in os.listdir(m.mnt), 1.0)
    assert wait_until(lambda: os.path.exists(m.mnt / "carol" / carol_run / "c.txt"), 1.0)
    assert outcome(write_close(m.mnt / "carol" / "promote" / carol_run / "d.txt",
                               b"d\n")) == "ok"
    assert read_bytes(world.root / "artifacts" / "carol" / carol_run / "d.txt") == b"d\n"
    shutil.rmtree(world.root / "artifacts" / BOB)
    assert wait_until(lambda: sorted(os.listdir(m.mnt)) == [ALICE, "carol"], 1.0)
    # Its entry, cached for as long as the cache timeout, goes as soon.
    assert wait_until(lambda: errno_of(os.stat, m.mnt / BOB) == "ENOENT", 1.0)


SANDBOX_SCRIPT = r"""
run=$1
read other other_run
echo "ID:$(id -u)"
echo "LS:$(ls -a /artifacts | tr '\n' ' ')"
echo "LSRUN:$(ls /artifacts/$run | tr '\n' ' ')"
printf 'from %s\n' "$(id -u)" > /tmp/out.txt
if cp /tmp/out.txt /artifacts/promote/$run/landed.txt; then echo "CP:ok"; else echo "CP:failed"; fi
echo "LANDED:$(cat /artifacts/$run/landed.txt 2>&1)"
echo "STATUS:$(cat /artifacts/promote/.status | wc -l)"
# Every way up and over to the other tenant.
for p in "/artifacts/../$other" "/artifacts/$run/../../$other" "/$other" \
         "/artifacts/promote/../../$other" "/artifacts/$other_run" \
         "/artifacts/promote/$other_run" "/proc/self/root/$other" \
         "/proc/self/cwd/../$other"; do
    if ls "$p" >/dev/null 2>&1; then echo "REACHED:$p"; fi
done
if mkdir /artifacts/promote/$other_run 2>/dev/null; then echo "REACHED:mkdir $other_run"; fi
cd /artifacts/$run && cd .. && cd .. && echo "UP:$(pwd):$(ls | tr '\n' ' ')"
echo "PARENT:$(stat -c %i /artifacts/..)"
echo "XATTRS:$(getfattr -d -m - /artifacts 2>/dev/null | tr '\n' ' ')"
echo "MOUNTINFO:$(grep ' /artifacts ' /proc/self/mountinfo)"
echo "END"
"""


def sandbox(uid, bind_source, run, other, other_run):
    """bwrap as uid with bind_source at /artifacts; returns (Popen, stdin text)."""
    cmd = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
           "--inh-caps=-all",
           shutil.which("bwrap"), "--unshare-all", "--die-with-parent", "--new-session",
           "--ro-bind", "/usr", "/usr",
           "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
           "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
           "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
           "--bind", str(bind_source), "/artifacts", "--chdir", "/",
           "/bin/sh", "-c", SANDBOX_SCRIPT, "agent", run]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, f"{other} {other_run}\n"


def parse(out):
    lines = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.isupper():
            lines.setdefault(key, []).append(value)
    return lines


def test_two_sandboxes_on_one_daemon(world, public_dir, mounter):
    """alice's and bob's sandboxes, as two unprivileged users, run at once
    on binds of one daemon's /alice and /bob: each lists its own runs,
    promotes into its own run, and reaches nothing of the other by any
    path (up through .., through /proc, by guessing names); neither
    output names the other tenant or anything of its runs."""
    if not shutil.which("bwrap"):
        pytest.fail("bwrap not found: tools/install-deps installs bubblewrap")
    own_tenant_dirs(world)
    top = os.path.join(public_dir, "all")
    m = mounter(world, None, "-o", f"all_tenants,{SANDBOX_OPTIONS}", mnt=top,
                expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    a_proc, a_in = sandbox(ALICE_UID, m.mnt / ALICE, ALICE_RUN, BOB, BOB_RUN)
    b_proc, b_in = sandbox(BOB_UID, m.mnt / BOB, BOB_RUN, ALICE, ALICE_RUN)
    a_out, a_err = a_proc.communicate(a_in, timeout=60)
    b_out, b_err = b_proc.communicate(b_in, timeout=60)
    assert "END" in a_out, a_err
    assert "END" in b_out, b_err
    a, b = parse(a_out), parse(b_out)

    assert a["ID"] == [str(ALICE_UID)] and b["ID"] == [str(BOB_UID)]
    assert set(a["LS"][0].split()) == {".", "..", ALICE_RUN, SHARED_RUN, "promote"}
    assert set(b["LS"][0].split()) == {".", "..", BOB_RUN, SHARED_RUN, "promote"}
    assert "notes.txt" in a["LSRUN"][0] and "bob-only.txt" in b["LSRUN"][0]
    assert a["CP"] == ["ok"] and b["CP"] == ["ok"], (a_err, b_err)
    assert a["LANDED"] == [f"from {ALICE_UID}"] and b["LANDED"] == [f"from {BOB_UID}"]
    assert "REACHED" not in a and "REACHED" not in b, (a.get("REACHED"), b.get("REACHED"))
    # Above /artifacts is the sandbox's own root, not the daemon's.
    assert set(a["UP"][0].split(":", 1)[1].split()) <= {"artifacts", "bin", "dev", "lib", "lib64",
                                                      "proc", "sbin", "tmp", "usr"}
    for out, other in ((a_out, BOB), (b_out, ALICE)):
        seen = "\n".join(line for line in out.splitlines()).encode()
        for secret in [other.encode(), *TENANT_SECRETS[other], str(world.root).encode(),
                       b"all_tenants"]:
            assert secret not in seen, f"{secret!r} visible in the other sandbox"

    for client, run, uid in ((ALICE, ALICE_RUN, ALICE_UID), (BOB, BOB_RUN, BOB_UID)):
        rel = f"artifacts/{client}/{run}"
        assert read_bytes(world.root / rel / "landed.txt") == f"from {uid}\n".encode()
        strict_metadata(read_bytes(world.root / rel / "metadata.json"), run)
    guard.check(allow=[f"artifacts/{c}/{r}/{f}" for c, r in ((ALICE, ALICE_RUN), (BOB, BOB_RUN))
                       for f in ("landed.txt", "metadata.json")])


def test_other_users_cannot_list_the_root(world, public_dir, mounter):
    """On the host, a user who reaches the all-tenants mount (allow_other,
    default_permissions) cannot list the tenants, nor enter a tenant
    directory owned by someone else (0700), to read or to write into its
    promote/; its owner can."""
    own_tenant_dirs(world)
    top = os.path.join(public_dir, "all")
    m = mounter(world, None, "-o", f"all_tenants,{SANDBOX_OPTIONS}", mnt=top)

    def as_user(uid, *cmd):
        return subprocess.run([shutil.which("setpriv"), f"--reuid={uid}", f"--regid={uid}",
                               "--clear-groups", *cmd], capture_output=True, text=True,
                              timeout=30)

    r = as_user(BOB_UID, "ls", str(m.mnt))
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stdout)
    assert stat.S_IMODE(os.stat(m.mnt / ALICE).st_mode) == 0o700
    r = as_user(BOB_UID, "ls", str(m.mnt / ALICE))
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stdout)
    r = as_user(ALICE_UID, "ls", str(m.mnt / ALICE))
    assert r.returncode == 0 and ALICE_RUN in r.stdout, r.stderr
    r = as_user(BOB_UID, "sh", "-c", f"echo x > {m.mnt}/{ALICE}/promote/{ALICE_RUN}/x.txt")
    assert r.returncode != 0 and "Permission denied" in r.stderr, r.stderr
    assert not (world.root / "artifacts" / ALICE / ALICE_RUN / "x.txt").exists()


def test_bind_of_a_tenant_is_a_tenant_view(world, public_dir, mounter):
    """A bind of /alice behaves as alice's own mount: the same listing,
    its promote/, nothing of bob; unmounting the bind leaves the daemon
    serving."""
    top = os.path.join(public_dir, "all")
    m = mounter(world, None, "-o", "all_tenants", mnt=top)
    view = os.path.join(public_dir, "alice-view")
    os.mkdir(view)
    r = bind_mount(m.mnt / ALICE, view)
    assert r.returncode == 0, r.stderr
    try:
        assert sorted(os.listdir(view)) == sorted([ALICE_RUN, SHARED_RUN, "promote"])
        assert outcome(write_close(os.path.join(view, "promote", ALICE_RUN, "v.txt"),
                                   b"v")) == "ok"
        assert read_bytes(world.root / "artifacts" / ALICE / ALICE_RUN / "v.txt") == b"v"
    finally:
        if is_mounted(view):
            fusermount_u(view)
    assert sorted(os.listdir(m.mnt)) == [ALICE, BOB]


@pytest.mark.parametrize("options,message", [
    (("-o", "client=alice,all_tenants"), "exclude each other"),
    (("-o", f"all_tenants,run={ALICE_RUN}"), "needs -o client=ID"),
])
def test_conflicting_options_refused(world, tmp_path, options, message):
    """all_tenants with client= or run= is refused before mounting."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run([str(BIN), "-f", *options, str(world.root), str(mnt)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert not is_mounted(mnt)


def test_many_tenants_made_at_once(world, mounter):
    """Twelve new tenants, each looked up and promoted into by four
    processes at once: every tenant is made once (one "now served" line
    each), every promotion lands in its own tenant, nothing is logged
    above info (under ThreadSanitizer too: tools/test)."""
    runs = {f"t{i:02d}": f"{i:08d}-0000-4000-8000-000000000000" for i in range(12)}
    for client, run in runs.items():
        world.add_run(client, run, {"seed.txt": client.encode()})
    m = mounter(world, None, "-o", "all_tenants")
    code = r"""
import os, sys
mnt, worker = sys.argv[1], sys.argv[2]
pairs = sys.argv[3:]
for client, run in zip(pairs[::2], pairs[1::2]):
    assert run in os.listdir(os.path.join(mnt, client)), client
    path = os.path.join(mnt, client, "promote", run, f"w{worker}.txt")
    with open(path, "wb") as f:
        f.write(f"{client} {worker}\n".encode())
print("ok")
"""
    pairs = [x for item in runs.items() for x in item]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(m.mnt), str(w), *pairs],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(4)]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip() == "ok", err
    for client, run in runs.items():
        run_dir = world.root / "artifacts" / client / run
        for w in range(4):
            assert read_bytes(run_dir / f"w{w}.txt") == f"{client} {w}\n".encode()
        doc = strict_metadata(read_bytes(run_dir / "metadata.json"), run)
        assert sorted(a["filename"] for a in doc["artifacts"]) == \
            ["seed.txt", *[f"w{w}.txt" for w in range(4)]]
    served = [line for line in m.log_lines("info") if "now served" in line]
    assert sorted(served) == sorted(set(served)) and len(served) == len(runs), served
