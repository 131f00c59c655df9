"""fusetrace - counts the requests the kernel sends to one FUSE mount.

The kernel's fuse:fuse_request_send tracepoint (tracefs) fires for every
request it queues for a FUSE daemon; a tracefs instance of our own,
filtered on the mount's connection, counts them by opcode without touching
the system's own tracing.  That is how tools/bench and the tests prove
what a cache or FUSE passthrough spared the daemon: a passthrough read
sends no FUSE_READ.  Needs root, and tracefs at /sys/kernel/tracing
(mounted here when it is not).
"""

from __future__ import annotations

import os
import subprocess

TRACING = "/sys/kernel/tracing"


def mount_device(mnt) -> tuple[int, int]:
    """(major, minor) of what is mounted on mnt, from mountinfo (a stat of
    another user's FUSE mount is refused, even to root)."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == str(mnt):
                found = fields[2]          # the last mount there is the visible one
    if found is None:
        raise RuntimeError(f"{mnt} is not in /proc/self/mountinfo")
    major, minor = found.split(":")
    return int(major), int(minor)


class FuseRequests:
    """Counts, from now until close(), the requests sent to mnt's daemon."""

    def __init__(self, mnt):
        if not os.path.isdir(os.path.join(TRACING, "instances")):
            subprocess.run(["mount", "-t", "tracefs", "nodev", TRACING], check=True,
                           capture_output=True)
        if not os.path.isdir(os.path.join(TRACING, "events", "fuse")):
            raise RuntimeError("no fuse tracepoints in tracefs: this kernel cannot count "
                               "FUSE requests")
        major, minor = mount_device(mnt)
        # The tracepoint prints the kernel's dev_t: major << 20 | minor.
        self.connection = major << 20 | minor
        self.dir = os.path.join(TRACING, "instances",
                                f"artifactfs-{os.getpid()}-{self.connection}")
        os.mkdir(self.dir)
        self._write("events/fuse/fuse_request_send/filter", f"connection == {self.connection}")
        self._write("events/fuse/fuse_request_send/enable", "1")

    def _write(self, rel: str, text: str) -> None:
        with open(os.path.join(self.dir, rel), "w") as f:
            f.write(text)

    def counts(self) -> dict[str, int]:
        """Requests so far by opcode name, FUSE_ prefix dropped: {"READ": 3, ...}."""
        with open(os.path.join(self.dir, "trace")) as f:
            text = f.read()
        out: dict[str, int] = {}
        for line in text.splitlines():
            if " opcode " in line and "(FUSE_" in line:
                name = line.split("(FUSE_", 1)[1].split(")", 1)[0]
                out[name] = out.get(name, 0) + 1
        return out

    def close(self) -> None:
        if self.dir:
            self._write("events/fuse/fuse_request_send/enable", "0")
            os.rmdir(self.dir)
            self.dir = None

    def __enter__(self) -> "FuseRequests":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
