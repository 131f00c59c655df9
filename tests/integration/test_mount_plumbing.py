"""Mounting the way operators do: mount(8) with -t fuse.artifactfs, fstab
lines (a private one, mount -T FILE), the systemd unit (systemd-analyze
verify), meson install, and the daemon's sd_notify readiness against a fake
NOTIFY_SOCKET (systemd is not PID 1 on these machines).

mount(8) runs Debian's mount.fuse3 with an emptied environment (no PATH):
its shell then finds `artifactfs` only through its default path
(/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin), where
`meson install` puts it.  So these tests do not put the build on PATH: each
runs mount(8) in a private mount namespace whose /usr/local/sbin holds a
link to the built daemon, and reads the mount through /proc/PID/root.
Nothing they mount is ever visible outside that namespace.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    ALICE, ALICE_MARK, BIN, BOB, EXIT_TIMEOUT, REPO_ROOT, SHARED_RUN, expected_runs,
    fusermount_u, is_mounted, wait_until,
)

FUSE_TYPE = "fuse.artifactfs"
# Options an fstab line may carry for mount(8), systemd or mount.fuse3 that
# must not change what is mounted.
HARMLESS = "noauto,nofail,_netdev,x-systemd.automount,x-systemd.requires=foo.service"


class MountNamespace:
    """A process holding a private mount namespace in which
    /usr/local/sbin/artifactfs is the daemon under test."""

    def __init__(self, tmp: Path):
        sbin = tmp / "sbin"
        sbin.mkdir()
        (sbin / "artifactfs").symlink_to(BIN)
        # The namespace starts with copies of the host's mounts.  Copies of
        # other FUSE mounts (other tests') are detached at once: a copy would
        # keep their connection alive, and their daemons running after they
        # unmount.
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             'while read -r _ mnt type _; do'
             '  case $type in fuse|fuse.*) umount -l "$(printf %b "$mnt")" || exit 1;; esac;'
             ' done < /proc/self/mounts;'
             # libmount's own record of userspace options (utab), kept
             # apart from the host's.
             ' mount -t tmpfs tmpfs /run/mount &&'
             ' mount --bind "$1" /usr/local/sbin && echo bound && exec sleep 3600', "sh",
             str(sbin)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        line = self.holder.stdout.readline()
        if line != b"bound\n":
            self.holder.kill()
            self.holder.wait()
            pytest.fail(f"cannot set up a private mount namespace (unshare): {line!r}")
        self.ns = os.readlink(f"/proc/{self.holder.pid}/ns/mnt")

    def run(self, *args) -> subprocess.CompletedProcess:
        """Runs a command inside the namespace."""
        return subprocess.run(["nsenter", f"--target={self.holder.pid}", "--mount", "--",
                               *map(str, args)], capture_output=True, text=True, timeout=30)

    def path(self, path) -> Path:
        """path as the namespace sees it, from outside."""
        return Path(f"/proc/{self.holder.pid}/root{Path(path).resolve()}")

    def fuse_mounts(self) -> dict[str, tuple[str, set[str]]]:
        """Mount point -> (type, options) of the namespace's FUSE mounts."""
        res = {}
        with open(f"/proc/{self.holder.pid}/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if fields[2] == "fuse" or fields[2].startswith("fuse."):
                    res[fields[1]] = (fields[2], set(fields[3].split(",")))
        return res

    def daemons(self, mnt=None) -> list[int]:
        """The artifactfs processes living in the namespace (they detached),
        or those given mnt on their command line."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if (os.readlink(f"/proc/{entry}/ns/mnt") == self.ns and
                        Path(f"/proc/{entry}/comm").read_text().strip() == "artifactfs" and
                        (mnt is None or str(mnt).encode() in
                         Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0"))):
                    pids.append(int(entry))
            except OSError:
                continue
        return pids

    def unmount(self, mnt, command=("fusermount3", "-u")) -> None:
        """Unmounts as an operator would; the daemon must then exit."""
        assert self.daemons(mnt), f"no daemon serves {mnt}"
        r = self.run(*command, mnt)
        assert r.returncode == 0, r.stderr
        wait_until(lambda: not self.daemons(mnt), timeout=EXIT_TIMEOUT,
                   what="the daemon's exit after fusermount3 -u")

    def close(self) -> list[str]:
        problems = []
        for mnt in self.fuse_mounts():
            problems.append(f"{mnt} still mounted at teardown")
            if self.run("fusermount3", "-u", mnt).returncode != 0:
                self.run("fusermount3", "-uz", mnt)
        deadline = time.monotonic() + EXIT_TIMEOUT
        while self.daemons() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.daemons():
            problems.append(f"daemon {pid} still running after unmount; killed")
            os.kill(pid, signal.SIGKILL)
        # The namespace, and anything still mounted in it, goes with its
        # last process.
        self.holder.kill()
        self.holder.wait()
        return problems


@pytest.fixture
def mount_ns(tmp_path):
    ns = MountNamespace(tmp_path)
    try:
        yield ns
    finally:
        problems = ns.close()
    if problems:
        pytest.fail("mount namespace teardown:\n" + "\n".join(problems), pytrace=False)


def assert_serves(ns: MountNamespace, store, mnt, client, mounted=None):
    """mnt is (in) an artifactfs mount (mounted, by default mnt itself)
    showing exactly client's runs."""
    fstype, _ = ns.fuse_mounts()[str(mounted or mnt)]
    assert fstype == FUSE_TYPE
    view = ns.path(mnt)
    assert sorted(os.listdir(view)) == sorted(expected_runs(store, client) + ["promote"])
    assert sorted(os.listdir(view / SHARED_RUN)) == sorted(
        os.listdir(store.run_dir(client, SHARED_RUN)))


def test_mount_t_fuse_artifactfs_serves_the_client(store, tmp_path, mount_ns):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # `users` (which mount.fuse3 drops) implies noexec,nosuid,nodev, which
    # reach the daemon and the kernel: options do flow through.
    r = mount_ns.run("mount", "-t", FUSE_TYPE, store.root, mnt,
                     "-o", f"client={ALICE},{HARMLESS},users")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert_serves(mount_ns, store, mnt, ALICE)
    _, options = mount_ns.fuse_mounts()[str(mnt)]
    assert {"noexec", "nosuid", "nodev"} <= options
    assert ALICE_MARK in (mount_ns.path(mnt) / SHARED_RUN / "report.md").read_bytes()
    assert not is_mounted(mnt), "mounted in the private namespace only"
    mount_ns.unmount(mnt)
    assert str(mnt) not in mount_ns.fuse_mounts()


def test_drop_privileges_serves_without_capabilities(store, tmp_path, mount_ns):
    """mount.fuse3 -o drop_privileges mounts itself and starts the daemon
    with the connection as /dev/fd/N, no capabilities and no_new_privs."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = mount_ns.run("mount", "-t", FUSE_TYPE, store.root, mnt,
                     "-o", f"client={ALICE},drop_privileges")
    assert r.returncode == 0, r.stderr
    assert_serves(mount_ns, store, mnt, ALICE)
    [pid] = mount_ns.daemons()
    status = dict(line.split(":\t", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines())
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"].strip() == "1"
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[2].startswith(b"/dev/fd/")
    # The daemon cannot unmount what it did not mount: umount(8) does, and
    # the daemon then exits.
    r = mount_ns.run("umount", mnt)
    assert r.returncode == 0, r.stderr
    wait_until(lambda: not mount_ns.daemons(), timeout=EXIT_TIMEOUT, what="the daemon's exit")


def test_fstab_lines_mount_a_and_mount_T(store, tmp_path, mount_ns):
    auto, manual = tmp_path / "auto", tmp_path / "manual"
    auto.mkdir()
    manual.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        "# a private fstab: the same lines /etc/fstab would hold\n"
        f"{store.root} {auto} {FUSE_TYPE} "
        f"client={ALICE},nofail,_netdev,x-systemd.automount,x-systemd.requires=foo.service 0 0\n"
        f"{store.root} {manual} {FUSE_TYPE} client={BOB},noauto 0 0\n")

    r = mount_ns.run("mount", "-a", "-T", fstab)
    assert r.returncode == 0, r.stderr
    assert sorted(mount_ns.fuse_mounts()) == [str(auto)], "mount -a skips the noauto line"
    assert_serves(mount_ns, store, auto, ALICE)

    # Naming the mount point mounts a noauto line too.
    r = mount_ns.run("mount", "-T", fstab, manual)
    assert r.returncode == 0, r.stderr
    assert_serves(mount_ns, store, manual, BOB)

    # umount(8), natural for fstab mounts, ends the daemons too.
    mount_ns.unmount(manual, command=["umount"])
    mount_ns.unmount(auto, command=["umount"])
    assert mount_ns.fuse_mounts() == {}


def test_fstab_line_for_all_tenants(store, tmp_path, mount_ns):
    """One fstab line serves every tenant: each in its own directory,
    each as a single-tenant mount of it would show it."""
    every = tmp_path / "all"
    every.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{store.root} {every} {FUSE_TYPE} all_tenants,allow_other,{HARMLESS} 0 0\n")
    r = mount_ns.run("mount", "-T", fstab, every)
    assert r.returncode == 0, r.stderr
    view = mount_ns.path(every)
    assert sorted(os.listdir(view)) == [ALICE, BOB]
    for client in (ALICE, BOB):
        assert_serves(mount_ns, store, every / client, client, mounted=every)
    mount_ns.unmount(every, command=["umount"])
    assert mount_ns.fuse_mounts() == {}


# --------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------

BUILD_DIR = BIN.parent
UNIT = "artifactfs@.service"           # one tenant per instance
ALL_UNIT = "artifactfs-all.service"    # every tenant, one daemon


def configured_unit(name: str = UNIT) -> Path:
    unit = BUILD_DIR / "systemd" / name
    if not unit.exists():
        pytest.fail(f"{unit} missing: is {BIN} in a meson build dir of this tree?")
    return unit


@pytest.mark.parametrize("name,instance", [(UNIT, "artifactfs@acme.service"),
                                           (ALL_UNIT, ALL_UNIT)])
def test_unit_passes_systemd_analyze_verify(tmp_path, name, instance):
    """The unit as meson configured it, its ExecStart pointed at the build
    (the installed path need not exist here) and its man page found where
    meson install would put it."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: run tools/install-deps"
    text = configured_unit(name).read_text()
    execs = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert len(execs) == 1 and execs[0].split()[0].endswith("/sbin/artifactfs")
    (tmp_path / name).write_text(
        text.replace(execs[0].split()[0], f"ExecStart={BIN}", 1))
    man8 = tmp_path / "man" / "man8"
    man8.mkdir(parents=True)
    (man8 / "artifactfs.8").symlink_to(REPO_ROOT / "docs" / "artifactfs.8")
    r = subprocess.run([analyze, "verify", str(tmp_path / instance)],
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANPATH": str(tmp_path / "man")})
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")


def unit_commands(text: str, key: str, instance: str, env: dict) -> list[list[str]]:
    """The command lines of key= (ExecStart, ...) as systemd would run them
    for instance, for what these units use: a leading "-", quoting, %i, $$,
    ${VAR} inside a word and $VAR as words of their own (split, dropped when
    empty)."""
    commands = []
    for line in text.splitlines():
        if not line.startswith(key + "="):
            continue
        argv = []
        for word in shlex.split(line[len(key) + 1:].lstrip("-")):
            word = word.replace("%i", instance)
            whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
            if whole:
                argv += env.get(whole.group(1), "").split()
                continue
            word = re.sub(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                          lambda m: env.get(m.group(1), ""), word)
            argv.append(word.replace("$$", "$"))
        commands.append(argv)
    return commands


def test_unit_commands_serve_the_instance_tenant(store, tmp_path):
    """ExecStartPre, ExecStart and ExecStopPost of the configured unit, run
    the way systemd would (ExecStart pointed at the build), with a fake
    NOTIFY_SOCKET: the instance's tenant is served, options from the
    environment file apply, SIGTERM stops it cleanly."""
    text = configured_unit().read_text()
    [[daemon, *_]] = unit_commands(text, "ExecStart", ALICE, {})
    text = text.replace(daemon, str(BIN))
    root = tmp_path / "mounts"
    env = {**os.environ, "ARTIFACTFS_STORE": str(store.root),
           "ARTIFACTFS_MOUNT_ROOT": str(root), "ARTIFACTFS_OPTIONS": "-o ro -o show_expired"}

    [pre] = unit_commands(text, "ExecStartPre", ALICE, env)
    unset = {k: v for k, v in env.items() if not k.startswith("ARTIFACTFS_")}
    r = subprocess.run(pre, env=unset, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "ARTIFACTFS_MOUNT_ROOT" in r.stderr
    assert not root.exists()
    subprocess.run(pre, env=env, check=True, timeout=30)
    mnt = root / ALICE
    assert mnt.is_dir()

    [start] = unit_commands(text, "ExecStart", ALICE, env)
    assert start[-2:] == [str(store.root), str(mnt)] and "ro" in start

    def check_served(status):
        assert status == f"STATUS=serving client {ALICE} of {store.root} on {mnt}"
        assert all(os.path.isdir(mnt / run) for run in expected_runs(store, ALICE, True))
        assert not os.path.exists(mnt / "promote"), "-o ro from ARTIFACTFS_OPTIONS"

    serve_as_systemd_would(start, env, mnt, tmp_path, check_served)
    # After a clean stop there is nothing to detach: the failure is ignored
    # ("-" in the unit).
    [post] = unit_commands(text, "ExecStopPost", ALICE, env)
    assert post[0] == "fusermount3" and post[-1] == str(mnt)
    assert subprocess.run(post, capture_output=True, timeout=30).returncode != 0


def serve_as_systemd_would(start, env, mnt, tmp_path, check_served):
    """Runs ExecStart's command line with a fake NOTIFY_SOCKET: READY=1,
    then check_served(its STATUS= line) while mounted, then SIGTERM:
    STOPPING=1, exit 0, unmounted, nothing logged above info."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(EXIT_TIMEOUT)
    stderr = tmp_path / "daemon.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(start, env={**env, "NOTIFY_SOCKET": str(sock_path)},
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    try:
        ready = sock.recv(4096).decode().splitlines()
        assert ready[0] == "READY=1"
        check_served(ready[1])
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode().startswith("STOPPING=1\n")
        assert proc.wait(EXIT_TIMEOUT) == 0
        assert not is_mounted(mnt)
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if is_mounted(mnt) and fusermount_u(mnt).returncode != 0:
            fusermount_u(mnt, lazy=True)
    log = stderr.read_text()
    assert not re.search(r"(error|warning):|Sanitizer|runtime error", log), log


def test_all_tenants_unit_serves_every_tenant(store, tmp_path):
    """artifactfs-all.service's commands, run as systemd would: one daemon
    on ARTIFACTFS_MOUNT_ROOT, each tenant at ARTIFACTFS_MOUNT_ROOT/<client>
    (where artifactfs@<client> would mount it), options from
    ARTIFACTFS_ALL_OPTIONS; SIGTERM stops it cleanly."""
    text = configured_unit(ALL_UNIT).read_text()
    [[daemon, *_]] = unit_commands(text, "ExecStart", "", {})
    text = text.replace(daemon, str(BIN))
    root = tmp_path / "mounts"
    env = {**os.environ, "ARTIFACTFS_STORE": str(store.root),
           "ARTIFACTFS_MOUNT_ROOT": str(root), "ARTIFACTFS_ALL_OPTIONS": "-o show_expired"}
    [pre] = unit_commands(text, "ExecStartPre", "", env)
    subprocess.run(pre, env=env, check=True, timeout=30)
    [start] = unit_commands(text, "ExecStart", "", env)
    assert start[-2:] == [str(store.root), str(root)] and "all_tenants" in start

    def check_served(status):
        assert status == f"STATUS=serving every tenant of {store.root} on {root}"
        for client in (ALICE, BOB):
            assert all(os.path.isdir(root / client / run)
                       for run in expected_runs(store, client, True))
            assert os.path.isdir(root / client / "promote")

    serve_as_systemd_would(start, env, root, tmp_path, check_served)
    [post] = unit_commands(text, "ExecStopPost", "", env)
    assert post[0] == "fusermount3" and post[-1] == str(root)


def test_meson_install_puts_the_units_beside_the_daemon(tmp_path):
    if not (BUILD_DIR / "meson-private").is_dir():
        pytest.skip(f"{BIN} is not in a meson build dir")
    dest = tmp_path / "dest"
    r = subprocess.run(["meson", "install", "-C", str(BUILD_DIR), "--no-rebuild",
                        "--destdir", str(dest), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in (UNIT, ALL_UNIT):
        units = list(dest.rglob(name))
        assert len(units) == 1 and units[0].parent.match("lib/systemd/system")
        daemon = units[0].read_text().split("ExecStart=", 1)[1].split()[0]
        assert (dest / daemon.lstrip("/")).is_file(), f"ExecStart={daemon} not installed"


def test_sd_notify_ready_reloading_and_stopping(store, mounter, tmp_path):
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(EXIT_TIMEOUT)
    mnt = tmp_path / "mnt"
    got = {}

    def receive_ready():
        # What the mount answers at the moment READY=1 arrives: lookups of
        # the tenant's runs.  (Not a listing: a directory handle whose
        # release the kernel sends after SIGTERM is still open at exit.)
        try:
            got["ready"] = sock.recv(4096).decode()
            got["runs"] = [stat.S_ISDIR(os.stat(mnt / run).st_mode)
                           for run in expected_runs(store, ALICE)]
        except Exception as e:  # reported by the asserts below
            got["error"] = repr(e)

    receiver = threading.Thread(target=receive_ready)
    receiver.start()
    try:
        m = mounter(store, ALICE, mnt=mnt, cmd_prefix=["env", f"NOTIFY_SOCKET={path}"])
    finally:
        receiver.join(EXIT_TIMEOUT)
    assert "error" not in got, got
    lines = got["ready"].split("\n")
    assert lines[0] == "READY=1"
    assert lines[1] == f"STATUS=serving client {ALICE} of {store.root} on {mnt}"
    assert got["runs"] == [True] * len(expected_runs(store, ALICE)) and got["runs"]

    # A reload (systemctl reload: SIGHUP) says so, and when it is done.
    os.kill(m.proc.pid, signal.SIGHUP)
    assert sock.recv(4096).decode() == "RELOADING=1"
    assert sock.recv(4096).decode().split("\n") == ["READY=1", "STATUS=reloaded"]
    assert is_mounted(m.mnt)

    os.kill(m.proc.pid, signal.SIGTERM)
    assert sock.recv(4096).decode().split("\n")[0] == "STOPPING=1"
    assert m.proc.wait(EXIT_TIMEOUT) == 0
    assert not is_mounted(m.mnt)
    m.state = "stopped"     # nothing left for the fixture to unmount
    assert m.log_problems() == []
    sock.close()
