"""A tenant view inside a bubblewrap sandbox, as an agent would have it.

alice's view is mounted with the options docs/security.md recommends for
sandboxes (allow_other, default_permissions, uid/gid of the sandbox user,
nosuid, nodev, a quota) and bound at /artifacts in a bwrap sandbox run as
an unprivileged uid (65534) with every namespace unshared and only /usr
(plus the /bin, /lib, /lib64 links) bound read-only.  Inside, the agent
lists, reads and promotes (cp into /artifacts/promote/<run>/); it cannot
see the store's host path (the mount table names the file system
"artifactfs"; no other process, so no daemon command line, is visible),
another tenant, or anything of the host outside the mount.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import (REFUSALS, ALICE, ALICE_RUN, BOB, BOB_MARK, BOB_RUN, HOST_MARK,
                      SHARED_RUN, StoreGuard, TENANT_SECRETS, read_bytes, strict_metadata)

AGENT_UID = 65534
SANDBOX_OPTIONS = (f"allow_other,default_permissions,uid={AGENT_UID},gid={AGENT_UID},"
                   "nosuid,nodev,quota_bytes=104857600,quota_files=1000")

AGENT_SCRIPT = r"""
run=$1
# What to probe for comes on stdin, not argv: the sandbox's pid 1 (bwrap)
# shows its argv to the agent, and nothing secret may be visible there.
read bob_run store host_secret
echo "ID:$(id -u):$(id -g)"
echo "LS:$(ls /artifacts | tr '\n' ' ')"
echo "LSRUN:$(ls /artifacts/$run | tr '\n' ' ')"
echo "READ:$(cat /artifacts/$run/notes.txt)"
echo "XATTR:$(getfattr --only-values -n user.artifact.workflow_id /artifacts/$run 2>/dev/null || echo none)"
printf 'result of the agent\n' > /tmp/result.txt
if cp /tmp/result.txt /artifacts/promote/$run/; then echo "CP:ok"; else echo "CP:failed"; fi
echo "LANDED:$(cat /artifacts/$run/result.txt 2>&1)"
echo "BOB:$(ls /artifacts/$bob_run 2>&1 | head -1)"
echo "BOBPROMOTE:$(mkdir /artifacts/promote/$bob_run 2>&1)"
echo "INPLACE:$(echo x 2>&1 > /artifacts/$run/notes.txt; echo $?)"
echo "STORE:$(test -e "$store" && echo visible || echo absent)"
echo "HOSTSECRET:$(test -e "$host_secret" && echo visible || echo absent)"
echo "SHADOW:$(test -e /etc/shadow && echo visible || echo absent)"
echo "ROOT:$(ls / | tr '\n' ' ')"
echo "PROCS:$(ls /proc | grep -c '^[0-9]')"
echo "CMDLINES:$(cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ')"
echo "MOUNTINFO:"
cat /proc/self/mountinfo
echo "MOUNTS:"
cat /proc/mounts
echo "END"
"""


def bwrap_command(mnt, script_args):
    setpriv = shutil.which("setpriv")
    bwrap = shutil.which("bwrap")
    if not bwrap:
        pytest.fail("bwrap not found: tools/install-deps installs bubblewrap")
    return [setpriv, f"--reuid={AGENT_UID}", f"--regid={AGENT_UID}", "--clear-groups",
            "--inh-caps=-all",
            bwrap, "--unshare-all", "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--bind", str(mnt), "/artifacts", "--chdir", "/",
            "/bin/sh", "-c", AGENT_SCRIPT, "agent", *[str(a) for a in script_args]]


@pytest.fixture
def public_mountpoint():
    """A mountpoint the unprivileged sandbox user can reach (pytest's own
    temporary directories are 0700 root).  Request it before mounter, so
    it is removed after the unmount."""
    d = tempfile.mkdtemp(prefix="artifactfs-sandbox-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    try:
        os.rmdir(d)
    except OSError:
        pass


def test_agent_in_bubblewrap_sandbox(world, public_mountpoint, mounter):
    """Inside the sandbox, as uid 65534: ls, cat, getfattr and cp into
    promote/ work; bob's runs, the store path, host files and /etc are out
    of sight; the mount table shows "artifactfs" and nothing of the host
    store; no host process is visible.  The promoted file lands in alice's
    run with valid metadata, and nothing else in the store changes."""
    m = mounter(world, ALICE, "-o", SANDBOX_OPTIONS, mnt=public_mountpoint,
                expect_warnings=REFUSALS)
    guard = StoreGuard(world)
    r = subprocess.run(bwrap_command(m.mnt, [ALICE_RUN]), capture_output=True, text=True,
                       timeout=60, input=f"{BOB_RUN} {world.root} {world.host_secret}\n")
    if r.returncode != 0 and "END" not in r.stdout:
        pytest.fail(f"bwrap could not run the agent (status {r.returncode}): {r.stderr}")
    out = r.stdout
    lines = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.isupper() and key not in lines:
            lines[key] = value

    assert lines["ID"] == f"{AGENT_UID}:{AGENT_UID}"
    assert set(lines["LS"].split()) == {ALICE_RUN, SHARED_RUN, "promote"}
    assert "notes.txt" in lines["LSRUN"].split()
    assert lines["READ"].startswith("alice notes")
    assert lines["XATTR"] == "wf-alice-second"
    assert lines["CP"] == "ok", r.stderr
    assert lines["LANDED"] == "result of the agent"
    assert "No such file" in lines["BOB"]
    assert "Permission denied" in lines["BOBPROMOTE"]
    assert lines["INPLACE"] != "0"
    assert lines["STORE"] == "absent" and lines["HOSTSECRET"] == "absent"
    assert lines["SHADOW"] == "absent"
    assert set(lines["ROOT"].split()) <= {"artifacts", "bin", "dev", "lib", "lib64", "proc",
                                          "sbin", "tmp", "usr"}
    # The sandbox's own: bwrap's init, the shell and its pipeline.
    assert int(lines["PROCS"]) <= 8, "host processes are visible in the sandbox"
    # The daemon's command line (it names the store) is not among them.
    # (bwrap's own argv is: it shows the host mountpoint, which therefore
    # should say nothing -- docs/security.md.)
    assert "client=" not in lines["CMDLINES"] and str(world.root) not in lines["CMDLINES"]
    mountinfo = out.split("MOUNTINFO:\n", 1)[1].split("MOUNTS:\n", 1)[0]
    fuse_lines = [line for line in mountinfo.splitlines() if " /artifacts " in line]
    assert fuse_lines and all(" - fuse.artifactfs artifactfs " in line for line in fuse_lines), \
        mountinfo
    # Everything the agent saw, less the two lines that echo its own probes.
    seen = "\n".join(line for line in out.splitlines()
                     if not line.startswith(("BOB:", "BOBPROMOTE:"))).encode()
    for secret in [str(world.root).encode(), b"/store", BOB_RUN.encode(), BOB_MARK,
                   HOST_MARK, *TENANT_SECRETS[BOB]]:
        assert secret not in seen, f"{secret!r} visible inside the sandbox"

    run_rel = f"artifacts/{ALICE}/{ALICE_RUN}"
    assert read_bytes(world.root / run_rel / "result.txt") == b"result of the agent\n"
    strict_metadata(read_bytes(world.root / run_rel / "metadata.json"), ALICE_RUN)
    guard.check(allow=[f"{run_rel}/result.txt", f"{run_rel}/metadata.json"])


def test_sandbox_user_without_allow_other_is_shut_out(world, public_mountpoint, mounter):
    """Without -o allow_other, the sandbox user cannot use the mount at all
    (the kernel refuses other users' access to a FUSE mount): the option
    is what opens the view to the sandbox, and only to what the view
    shows."""
    m = mounter(world, ALICE, mnt=public_mountpoint)
    r = subprocess.run(
        ["setpriv", f"--reuid={AGENT_UID}", f"--regid={AGENT_UID}", "--clear-groups",
         "ls", str(m.mnt)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.returncode, r.stderr)
