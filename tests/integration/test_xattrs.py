"""Extended attributes from metadata.json: names, values, absence, sizes."""

import errno
import os

import pytest

from conftest import (
    ALICE, ALICE_RUN, FILE_XATTRS, RUN_XATTRS, SHARED_RUN, XATTR_PREFIX, c_getxattr,
    c_listxattr, expected_files, make_metadata, xattrs,
)
from datetime import datetime, timedelta, timezone


def expected_file_xattrs(entry) -> dict:
    return {XATTR_PREFIX + k: str(entry[k]).encode() for k in FILE_XATTRS if k in entry}


def expected_run_xattrs(meta) -> dict:
    return {XATTR_PREFIX + k: meta[k].encode() for k in RUN_XATTRS if k in meta}


def test_file_xattrs_equal_metadata_values(store, alice):
    run = store.run(ALICE, SHARED_RUN)
    names = [n for n in expected_files(run.path) if n != "metadata.json"]
    assert len(names) == 9
    for name in names:
        got = xattrs(alice.mnt / SHARED_RUN / name)
        assert got == expected_file_xattrs(run.entry(name)), name
        assert sorted(os.listxattr(alice.mnt / SHARED_RUN / name)) == sorted(got)


@pytest.mark.parametrize("run_id", [SHARED_RUN, ALICE_RUN])
def test_run_xattrs_equal_metadata_values(store, alice, run_id):
    meta = store.run(ALICE, run_id).meta
    assert xattrs(alice.mnt / run_id) == expected_run_xattrs(meta)


def test_empty_user_directive_is_listed_with_an_empty_value(store, alice):
    assert store.run(ALICE, ALICE_RUN).meta["user_directive"] == ""
    assert "user.artifact.user_directive" in os.listxattr(alice.mnt / ALICE_RUN)
    assert os.getxattr(alice.mnt / ALICE_RUN, "user.artifact.user_directive") == b""


def test_unicode_and_special_characters_survive(store, mounter):
    created = datetime.now(timezone.utc).replace(microsecond=123456) - timedelta(hours=1)
    directive = 'Résumé 👍 "quoted" \\ back\nsecond line\ttab'
    files = {"données.csv": b"x,y\n"}
    meta = make_metadata("uni-run", files, workflow_id="wf-ünï-€", user_directive=directive,
                         created=created,
                         agent="agent-ß")
    store.add_run(ALICE, "uni-run", files, metadata=meta)
    m = mounter(store, ALICE)
    assert os.getxattr(m.mnt / "uni-run", "user.artifact.user_directive") == directive.encode()
    assert os.getxattr(m.mnt / "uni-run", "user.artifact.workflow_id") == "wf-ünï-€".encode()
    assert (os.getxattr(m.mnt / "uni-run" / "données.csv", "user.artifact.agent_id")
            == "agent-ß-0".encode())
    assert (os.getxattr(m.mnt / "uni-run", "user.artifact.created_at")
            == meta["created_at"].encode())
    assert meta["created_at"].endswith(".123456789+00:00")


@pytest.mark.parametrize("recorded", [0, 999, 2**63 - 1])
def test_size_bytes_is_the_recorded_value_as_decimal_text(store, mounter, recorded):
    """size_bytes is shown as recorded, even when it differs from the
    file's real size."""
    files = {"small.txt": b"0123456789"}
    meta = make_metadata("sizes-run", files, workflow_id="wf", user_directive="",
                         created=datetime.now(timezone.utc))
    meta["artifacts"][0]["size_bytes"] = recorded
    store.add_run(ALICE, "sizes-run", files, metadata=meta)
    m = mounter(store, ALICE)
    path = m.mnt / "sizes-run" / "small.txt"
    assert os.getxattr(path, "user.artifact.size_bytes") == str(recorded).encode()
    assert os.stat(path).st_size == 10                     # st_size is the file's


@pytest.mark.parametrize("recorded", [2**63, 2**64 - 1])
def test_size_bytes_beyond_int64_costs_only_that_attribute(store, mounter, recorded):
    """The schema's u64 goes beyond what jansson and SQLite hold (2**63 - 1,
    far beyond any real file): that one value is dropped with a warning,
    the run's other metadata is kept."""
    files = {"small.txt": b"0123456789", "other.txt": b"x"}
    meta = make_metadata("sizes-run", files, workflow_id="wf", user_directive="",
                         created=datetime.now(timezone.utc))
    meta["artifacts"][0]["size_bytes"] = recorded
    store.add_run(ALICE, "sizes-run", files, metadata=meta)
    m = mounter(store, ALICE, expect_warnings=["sizes-run"])
    with pytest.raises(OSError) as exc:
        os.getxattr(m.mnt / "sizes-run" / "small.txt", "user.artifact.size_bytes")
    assert exc.value.errno == errno.ENODATA
    assert os.getxattr(m.mnt / "sizes-run" / "other.txt", "user.artifact.size_bytes") == b"1"
    assert os.getxattr(m.mnt / "sizes-run", "user.artifact.workflow_id") == b"wf"


def test_absent_attributes_give_enodata(store, alice):
    f, r = alice.mnt / SHARED_RUN / "report.md", alice.mnt / SHARED_RUN
    for path, name in [(f, "user.artifact.nope"), (f, "user.artifact.workflow_id"),
                       (r, "user.artifact.agent_id"), (r, "user.other"),
                       (alice.mnt, "user.artifact.workflow_id"),
                       (alice.mnt / "promote", "user.artifact.workflow_id")]:
        with pytest.raises(OSError) as exc:
            os.getxattr(path, name)
        assert exc.value.errno == errno.ENODATA, (path, name, exc.value)


def test_files_without_a_metadata_entry_have_no_artifact_xattrs(store, mounter):
    (store.run_dir(ALICE, SHARED_RUN) / "unlisted.txt").write_bytes(b"not in metadata")
    m = mounter(store, ALICE)
    for name in ("unlisted.txt", "metadata.json"):
        assert [n for n in os.listxattr(m.mnt / SHARED_RUN / name)
                if n.startswith(XATTR_PREFIX)] == [], name


def test_root_and_promote_have_no_artifact_xattrs(alice):
    for path in (alice.mnt, alice.mnt / "promote"):
        assert [n for n in os.listxattr(path) if n.startswith(XATTR_PREFIX)] == []


def test_backing_file_xattrs_are_not_exposed(store, mounter):
    os.setxattr(store.run_dir(ALICE, SHARED_RUN) / "report.md", "user.backing", b"secret")
    os.setxattr(store.run_dir(ALICE, SHARED_RUN), "user.backing", b"secret")
    m = mounter(store, ALICE)
    assert "user.backing" not in os.listxattr(m.mnt / SHARED_RUN / "report.md")
    assert "user.backing" not in os.listxattr(m.mnt / SHARED_RUN)


def test_xattr_size_queries_and_erange(store, alice):
    path = alice.mnt / SHARED_RUN / "report.md"
    value = store.run(ALICE, SHARED_RUN).entry("report.md")["content_type"].encode()
    n, _, _ = c_getxattr(path, "user.artifact.content_type", 0)
    assert n == len(value)
    n, err, _ = c_getxattr(path, "user.artifact.content_type", len(value) - 1)
    assert (n, err) == (-1, errno.ERANGE)
    n, _, got = c_getxattr(path, "user.artifact.content_type", len(value))
    assert (n, got) == (len(value), value)
    names = "".join(f"{XATTR_PREFIX}{k}\0" for k in FILE_XATTRS).encode()
    n, _ = c_listxattr(path, 0)
    assert n == len(names)
    n, err = c_listxattr(path, len(names) - 1)
    assert (n, err) == (-1, errno.ERANGE)


def test_other_namespaces_are_not_supported(store, alice):
    """Only user.* attributes exist here: security.*, system.* and trusted.*
    get EOPNOTSUPP, which tells ls -l (and cp, tar) to stop asking for
    every file, where ENODATA made it ask twice a file."""
    for path in (alice.mnt, alice.mnt / SHARED_RUN, alice.mnt / SHARED_RUN / "report.md",
                 alice.mnt / "promote"):
        for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
            with pytest.raises(OSError) as exc:
                os.getxattr(path, name)
            assert exc.value.errno == errno.EOPNOTSUPP, (path, name)
        with pytest.raises(OSError) as exc:
            os.getxattr(path, "user.other")
        assert exc.value.errno == errno.ENODATA, path
