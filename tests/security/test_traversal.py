"""Path traversal through every name a tenant controls.

The names an agent chooses reach the daemon four ways: the run directory it
makes in promote/ (mkdir) or names in a request's run_id, the file it
creates in promote/<run>/ or names in a request's files, the other request
fields, and extended attribute names.  Each is tried with '..', '/', NUL
(where the API can carry one), a literal %2F, overlong names, invalid
UTF-8, control characters and newlines.  Documented outcome (docs/
promote.md, "Outcomes"): EINVAL, nothing written anywhere, the refusal in
promote/.status with the name made printable.  A name past the kernel's
limits (PATH_MAX; FUSE's own name limit, which depends on the kernel) is
refused by the kernel itself with ENAMETOOLONG before the daemon sees it.
"""

from __future__ import annotations

import json
import os

import pytest

from conftest import (ALICE, ALICE_RUN, BOB, SHARED_RUN, StoreGuard, check_status_safe,
                      errno_of, outcome, read_bytes, request, session_dir, strict_metadata,
                      upload)

SHARED = SHARED_RUN.encode()

# (id, name): hostile run ids.
BAD_RUNS = [
    ("dot", b"."),
    ("dotdot", b".."),
    ("dotdot-tenant", b"../bob"),
    ("dotdot-shared", b"../../artifacts/bob/" + SHARED),
    ("absolute", b"/etc"),
    ("slash", b"a/b"),
    ("pct2f-tenant", b"..%2Fbob%2F" + SHARED),
    ("pct2e", b"%2E%2E"),
    ("overlong-129", b"r" * 129),
    ("overlong-300", b"r" * 300),
    ("overlong-2000", b"r" * 2000),
    ("invalid-utf8", b"r\xff\xfe"),
    ("overlong-utf8-slash", b"a\xc0\xafb"),
    ("control", b"r\x01"),
    ("escape-sequence", b"r\x1b[2J"),
    ("newline", b"r\nx"),
    ("nul", b"r\x00x"),
    ("empty", b""),
    ("reserved-promote", b"promote"),
    ("space", b"r x"),
    ("non-ascii", "rün".encode()),
]

# (id, name): hostile artifact file names.
BAD_FILES = [
    ("dot", b"."),
    ("dotdot", b".."),
    ("traversal", b"../../../etc/passwd"),
    ("tenant-escape", b"../../bob/" + SHARED + b"/report.md"),
    ("absolute", b"/etc/shadow"),
    ("leading-dot", b".hidden"),
    ("reserved-artifactfs", b".artifactfs"),
    ("reserved-metadata", b"metadata.json"),
    ("overlong-256", b"f" * 256),
    ("overlong-1000", b"f" * 1000),
    ("overlong-5000", b"f" * 5000),
    ("invalid-utf8", b"f\xff.txt"),
    ("overlong-utf8-slash", b"a\xc0\xaf..\xc0\xafx"),
    ("utf8-surrogate", b"f\xed\xa0\x80"),
    ("utf8-above-10ffff", b"f\xf4\x90\x80\x80"),
    ("control", b"f\x01"),
    ("escape-sequence", b"\x1b]0;pwned\x07.txt"),
    ("newline", b"a\nb.txt"),
    ("tab", b"a\tb"),
    ("del", b"a\x7fb"),
    ("c1-control", b"a\xc2\x85b"),
    ("nul", b"a\x00b"),
    ("empty", b""),
]


def _ids(cases):
    return [c[0] for c in cases]


def json_string(name: bytes) -> bytes:
    """name as a JSON string token: escaped JSON when it is UTF-8 (NUL as
    \\u0000), else the raw bytes between quotes (invalid JSON text)."""
    try:
        return json.dumps(name.decode("utf-8")).encode()
    except UnicodeDecodeError:
        return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def syscall_name(name: bytes) -> bool:
    """Whether a name can be sent as one path component by a syscall."""
    return name not in (b"", b".", b"..") and b"/" not in name and b"\0" not in name


def expected_errno(name: bytes) -> set:
    # A path longer than PATH_MAX never reaches a file system; how long a
    # name FUSE passes on depends on the kernel (1024 bytes, or more).
    if len(name) >= 4096:
        return {"ENAMETOOLONG"}
    if len(name) > 255:
        return {"EINVAL", "ENAMETOOLONG"}
    return {"EINVAL"}


def assert_refusal_recorded(m, result: str):
    """The last .status entry is this refusal, in printable form."""
    if result == "ENAMETOOLONG":
        return      # refused by the kernel: the daemon never saw it
    entries = check_status_safe(m.mnt)
    assert entries and entries[-1]["result"] == result, entries[-3:]


# --------------------------------------------------------------------------
# Run ids
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name", [c[1] for c in BAD_RUNS if syscall_name(c[1])],
                         ids=[c[0] for c in BAD_RUNS if syscall_name(c[1])])
def test_bad_run_name_mkdir(world, attack_mount, name):
    """mkdir promote/<bad run id>: EINVAL (ENAMETOOLONG past FUSE's limit);
    promote/ does not list it and nothing is made in the store."""
    m = attack_mount
    guard = StoreGuard(world)
    path = os.path.join(os.fsencode(str(m.mnt / "promote")), name)
    result = errno_of(os.mkdir, path)
    assert result in expected_errno(name), result
    assert name not in os.listdir(os.fsencode(str(m.mnt / "promote")))
    assert errno_of(os.stat, path) in ("ENOENT", "ENAMETOOLONG")
    assert_refusal_recorded(m, result)
    guard.check()


@pytest.mark.parametrize("name", [c[1] for c in BAD_RUNS], ids=_ids(BAD_RUNS))
def test_bad_run_name_request(world, attack_mount, name):
    """A request whose run_id is hostile: close() fails with EINVAL, no
    file is read from sessions/ and nothing lands."""
    m = attack_mount
    guard = StoreGuard(world)
    doc = b'{"run_id": ' + json_string(name) + b', "files": ["ok.txt"]}'
    steps = request(m.mnt, doc)
    assert outcome(steps) == "EINVAL", steps
    assert_refusal_recorded(m, "EINVAL")
    guard.check()


# --------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------

def temporary_name(name: bytes) -> bool:
    """A dot-file other than "." and "..": a temporary in promote/<run>/."""
    return name.startswith(b".") and name not in (b".", b"..") and b"/" not in name


UPLOAD_BAD_FILES = [c for c in BAD_FILES if syscall_name(c[1]) and not temporary_name(c[1])]


@pytest.mark.parametrize("name", [c[1] for c in UPLOAD_BAD_FILES], ids=_ids(UPLOAD_BAD_FILES))
def test_bad_file_name_upload(world, attack_mount, name):
    """Creating promote/<run>/<bad name>: EINVAL at open (ENAMETOOLONG past
    the kernel's limits), nothing staged or landed, the refusal in .status
    with the name printable."""
    m = attack_mount
    guard = StoreGuard(world)
    steps = upload(m.mnt, ALICE_RUN, name, b"payload")
    assert steps.get("open") in expected_errno(name), steps
    assert_refusal_recorded(m, steps["open"])
    assert os.listdir(m.mnt / "promote" / ALICE_RUN) == []
    guard.check()


@pytest.mark.parametrize("name", [b".hidden", b".artifactfs", b".metadata.json"])
def test_dot_names_are_temporaries_that_never_land(world, mounter, name):
    """A dot-file in promote/<run>/ (".artifactfs" too) is a temporary: it is
    staged, never lands at close, never reaches the store or the daemon's
    own directory, and is gone when the mount ends."""
    m = mounter(world, ALICE)
    guard = StoreGuard(world)
    steps = upload(m.mnt, ALICE_RUN, name, b"payload")
    assert steps == {"write": "ok", "close": "ok"}, steps
    assert os.fsdecode(name) in os.listdir(m.mnt / "promote" / ALICE_RUN)
    assert os.fsdecode(name) not in os.listdir(m.mnt / ALICE_RUN)
    guard.check()
    m.unmount()
    guard.check()


@pytest.mark.parametrize("name", [c[1] for c in BAD_FILES], ids=_ids(BAD_FILES))
def test_bad_file_name_request(world, attack_mount, name):
    """A request naming a hostile session file: close() fails with EINVAL;
    nothing outside sessions/<run>/output/ is read, nothing lands."""
    m = attack_mount
    guard = StoreGuard(world)
    doc = (b'{"run_id": "' + ALICE_RUN.encode() + b'", "files": [' + json_string(name) + b']}')
    steps = request(m.mnt, doc)
    assert outcome(steps) == "EINVAL", steps
    assert_refusal_recorded(m, "EINVAL")
    guard.check()


def test_refusal_log_line_keeps_its_verdict(world, mounter):
    """A refusal's log line says what was refused and why even when the
    agent picked a 1000-byte file name: the operator must not lose the
    verdict (log.h: one line saying what failed, where and why).  The name
    may be shortened; the verdict may not be pushed out of the line.  (A
    request carries the name: a direct upload of such a name is refused by
    the lookup with ENAMETOOLONG, before any log line.)

    Found by this suite: log lines are cut at 1024 bytes and the printable
    file name (up to 1020 bytes) came before "promotion refused (EINVAL):
    ...", so a long hostile name hid the verdict from the log.  Fixed by
    b207e25 ("refusal log lines lead with the verdict")."""
    m = mounter(world, ALICE, allow_warnings=True)
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["f" * 1000]})
    assert outcome(steps) == "EINVAL", steps
    lines = [line for line in m.log_lines("warning") if "f" * 50 in line]
    assert lines, m.stderr()
    assert all("refused (EINVAL)" in line for line in lines), lines
    guard.check()


def test_percent_2f_in_request_is_not_decoded(world, attack_mount):
    """files: ["sub%2Fsecret.txt"] where sessions/<run>/output/sub/secret.txt
    exists: the name is literal, so there is no such file (ENOENT)."""
    m = attack_mount
    sub = session_dir(world, ALICE_RUN) / "sub"
    sub.mkdir()
    (sub / "secret.txt").write_bytes(b"nested")
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["sub%2Fsecret.txt"]})
    assert outcome(steps) == "ENOENT", steps
    assert_refusal_recorded(m, "ENOENT")
    guard.check()


def test_percent_2f_upload_name_stays_literal(world, attack_mount):
    """promote/<run>/x%2F..%2F..%2Fbob%2F... is an ordinary (odd) name: it
    lands as that one literal file in alice's own run and nowhere else."""
    m = attack_mount
    name = f"x%2F..%2F..%2F{BOB}%2F{SHARED_RUN}%2Freport.md"
    guard = StoreGuard(world)
    steps = upload(m.mnt, ALICE_RUN, name, b"literal")
    assert outcome(steps) == "ok", steps
    run_rel = f"artifacts/{ALICE}/{ALICE_RUN}"
    assert read_bytes(world.root / run_rel / name) == b"literal"
    assert read_bytes(m.mnt / ALICE_RUN / name) == b"literal"
    guard.check(allow=[f"{run_rel}/{name}", f"{run_rel}/metadata.json"])
    strict_metadata(read_bytes(world.root / run_rel / "metadata.json"), ALICE_RUN)


# --------------------------------------------------------------------------
# The other request fields
# --------------------------------------------------------------------------

BAD_VALUES = [
    ("newline", "line1\nline2"),
    ("escape-sequence", "\x1b[31mred"),
    ("c1-control", "a\u0085b"),
    ("too-long", "v" * 5000),
    ("json-breaker", '", "run_id": "x\n'),
]


@pytest.mark.parametrize("field", ["agent_id", "workflow_id", "user_directive"])
@pytest.mark.parametrize("value", [v for _, v in BAD_VALUES], ids=[i for i, _ in BAD_VALUES])
def test_bad_request_field(world, attack_mount, field, value):
    """agent_id, workflow_id and user_directive follow the xattr value rule
    (plain text, at most 4096 bytes): else EINVAL and nothing lands."""
    m = attack_mount
    guard = StoreGuard(world)
    steps = request(m.mnt, {"run_id": ALICE_RUN, "files": ["ok.txt"], field: value})
    assert outcome(steps) == "EINVAL", steps
    assert_refusal_recorded(m, "EINVAL")
    guard.check()


def test_request_field_invalid_utf8(world, attack_mount):
    """Raw invalid UTF-8 inside a request string: the document is not JSON
    (EINVAL), nothing lands."""
    m = attack_mount
    guard = StoreGuard(world)
    doc = (b'{"run_id": "' + ALICE_RUN.encode() + b'", "files": ["ok.txt"], '
           b'"agent_id": "\xc3\x28\xff"}')
    steps = request(m.mnt, doc)
    assert outcome(steps) == "EINVAL", steps
    assert_refusal_recorded(m, "EINVAL")
    guard.check()


# --------------------------------------------------------------------------
# Extended attribute names
# --------------------------------------------------------------------------

BAD_XATTR_NAMES = [
    ("dotdot", b"user.artifact.../agent_id"),
    ("slash", b"user.artifact.agent_id/../workflow_id"),
    ("pct2f", b"user.artifact.%2Fagent_id"),
    ("newline", b"user.artifact.agent_id\n"),
    ("control", b"user.artifact.agent\x01id"),
    ("invalid-utf8", b"user.artifact.\xff\xfe"),
    ("overlong", b"user.artifact." + b"a" * 240),
    ("other-prefix", b"user.artifactfs.stats"),
    ("trusted", b"trusted.artifact.agent_id"),
    ("security", b"security.capability"),
    ("prefix-only", b"user.artifact."),
]


@pytest.mark.parametrize("name", [n for _, n in BAD_XATTR_NAMES],
                         ids=[i for i, _ in BAD_XATTR_NAMES])
def test_bad_xattr_name_on_upload(world, attack_mount, name):
    """setxattr of a hostile name on an upload in flight is refused
    (EOPNOTSUPP; ERANGE from the kernel past 255 bytes) and sets nothing:
    the file lands with the default agent, metadata.json stays valid, and
    nothing but the upload itself changes in the store."""
    m = attack_mount
    guard = StoreGuard(world)
    path = m.mnt / "promote" / ALICE_RUN / "x.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"payload")
        result = errno_of(os.setxattr, path, name, b"bob-agent")
        # EOPNOTSUPP from the daemon; the kernel refuses some names itself
        # (ERANGE past 255 bytes, EINVAL for a malformed security.capability).
        assert result in ("EOPNOTSUPP", "ERANGE", "EINVAL"), result
    finally:
        os.close(fd)
    run_rel = f"artifacts/{ALICE}/{ALICE_RUN}"
    meta = strict_metadata(read_bytes(world.root / run_rel / "metadata.json"), ALICE_RUN)
    entry = {a["filename"]: a for a in meta["artifacts"]}["x.txt"]
    assert entry["agent_id"] == "artifactfs"
    guard.check(allow=[f"{run_rel}/x.txt", f"{run_rel}/metadata.json"])


@pytest.mark.parametrize("name", [n for _, n in BAD_XATTR_NAMES],
                         ids=[i for i, _ in BAD_XATTR_NAMES])
def test_bad_xattr_name_on_view(world, attack_mount, name):
    """getxattr and setxattr of a hostile name on a run file: no value
    (ENODATA, or ERANGE for a name the kernel refuses), EROFS for setting;
    the store is unchanged."""
    m = attack_mount
    guard = StoreGuard(world)
    path = m.mnt / SHARED_RUN / "report.md"
    assert errno_of(os.getxattr, path, name) in ("ENODATA", "ERANGE", "EOPNOTSUPP")
    # EROFS from the daemon; the kernel refuses some names itself (ERANGE
    # past 255 bytes, EINVAL for a malformed security.capability value).
    assert errno_of(os.setxattr, path, name, b"x") in ("EROFS", "ERANGE", "EINVAL")
    guard.check()
