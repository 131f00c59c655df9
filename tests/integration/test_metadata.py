"""A malformed metadata.json never stops the daemon: the run is listed, its
files are served, what could not be read has no xattr, and one warning
naming the run is logged."""

import copy
import os
import re
from datetime import datetime, timedelta, timezone

import pytest

from conftest import (
    ALICE, FILE_XATTRS, RUN_XATTRS, SHARED_RUN, XATTR_PREFIX, make_metadata, read_bytes,
    serde_pretty, wait_until, xattrs,
)

RUN = "malformed-run-7d1e"
FILES = {"alpha.txt": b"alpha bytes\n", "beta.csv": b"b,e\n1,2\n"}
CREATED = datetime.now(timezone.utc) - timedelta(hours=1)


def good_meta() -> dict:
    return make_metadata(RUN, FILES, workflow_id="wf-mal", user_directive="PLACEHOLDER",
                         created=CREATED, agent="mal-agent")


def mutated(fn):
    def build():
        meta = good_meta()
        fn(meta)
        return serde_pretty(meta)
    return build


def _set(path, value):
    def fn(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return fn


def _many(*fns):
    def fn(meta):
        for f in fns:
            f(meta)
    return fn


def _delete(*paths):
    def fn(meta):
        for path in paths:
            target = meta
            for key in path[:-1]:
                target = target[key]
            del target[path[-1]]
    return fn


def _entries_not_objects(meta):
    meta["artifacts"][0] = "alpha.txt"


def _artifacts_object(meta):
    meta["artifacts"] = {a["filename"]: a for a in meta["artifacts"]}


EVERYTHING = {"run": set(RUN_XATTRS), "alpha.txt": set(FILE_XATTRS), "beta.csv": set(FILE_XATTRS)}

# id -> (builder of metadata.json bytes or None for no file,
#        attributes that must be absent ({"run"|filename: {field}}),
#        strict: every other attribute must be present (else: may be absent,
#        but equal to the good value when present),
#        warning: "one" (exactly one naming the run) or "optional" (0 or 1))
CASES = {
    "bad_json_half_written": (lambda: serde_pretty(good_meta())[:200], EVERYTHING, False, "one"),
    "empty_file": (lambda: b"", EVERYTHING, False, "one"),
    "json_null": (lambda: b"null", EVERYTHING, False, "one"),
    "json_array": (lambda: b'["alpha.txt", "beta.csv"]', EVERYTHING, False, "one"),
    "invalid_utf8": (lambda: serde_pretty(good_meta()).replace(b"PLACEHOLDER", b"caf\xe9 \xff\xfe"),
                     {"run": {"user_directive"}}, False, "one"),
    "wrong_types": (mutated(_many(_set(["workflow_id"], 42), _set(["status"], None),
                                  _set(["artifacts", 0, "size_bytes"], "12"),
                                  _set(["artifacts", 1, "agent_id"], 7))),
                    {"run": {"workflow_id", "status"}, "alpha.txt": {"size_bytes"},
                     "beta.csv": {"agent_id"}}, True, "one"),
    "missing_fields": (mutated(_delete(["workflow_id"], ["expires_at"],
                                       ["artifacts", 0, "content_type"])),
                       {"run": {"workflow_id", "expires_at"}, "alpha.txt": {"content_type"}},
                       True, "one"),
    "negative_size": (mutated(_set(["artifacts", 0, "size_bytes"], -1)),
                      {"alpha.txt": {"size_bytes"}}, True, "one"),
    "size_over_u64": (mutated(_set(["artifacts", 0, "size_bytes"], 2**64)),
                      {"alpha.txt": {"size_bytes"}}, False, "one"),
    "artifacts_not_array": (mutated(_artifacts_object),
                            {"alpha.txt": set(FILE_XATTRS), "beta.csv": set(FILE_XATTRS)},
                            True, "one"),
    "artifact_entry_not_object": (mutated(_entries_not_objects),
                                  {"alpha.txt": set(FILE_XATTRS)}, True, "one"),
    "deep_nesting": (lambda: b'{"run_id": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
                     EVERYTHING, False, "one"),
    "fifty_megabytes": (mutated(_set(["user_directive"], "x" * (50 * 1024 * 1024))),
                        {"run": {"user_directive"}}, False, "one"),
    "no_metadata_file": (None, EVERYTHING, False, "optional"),
    "unparsable_timestamps": (mutated(_many(_set(["created_at"], "yesterday"),
                                            _set(["expires_at"], "not a date"))),
                              {}, False, "optional"),
}


def expected_values(meta: dict) -> dict:
    out = {"run": {k: meta[k] for k in RUN_XATTRS}}
    for a in meta["artifacts"]:
        out[a["filename"]] = {k: str(a[k]) for k in FILE_XATTRS}
    return out


def check_attrs(m, absent: dict, strict: bool, good: dict):
    for who, values in good.items():
        path = m.mnt / RUN if who == "run" else m.mnt / RUN / who
        got = xattrs(path)
        assert all(n.startswith(XATTR_PREFIX) for n in got), (who, got)
        for field, value in values.items():
            name = XATTR_PREFIX + field
            if field in absent.get(who, ()):
                assert name not in got, f"{who}: {name} should be absent, is {got.get(name)!r:.80}"
            elif strict:
                assert got.get(name) == value.encode(), f"{who}: {name}"
            elif name in got:
                assert got[name] == value.encode(), f"{who}: {name}"


def run_warnings(m) -> list[str]:
    return [line for line in m.log_lines("warning") if RUN in line]


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_metadata_is_survived(store, mounter, case):
    build, absent, strict, warning = CASES[case]
    data = build() if build else None
    store.add_run(ALICE, RUN, FILES, metadata=data)
    m = mounter(store, ALICE, expect_warnings=[re.escape(RUN)])
    assert RUN in os.listdir(m.mnt)
    expected_names = sorted(FILES) + ([] if data is None else ["metadata.json"])
    assert sorted(os.listdir(m.mnt / RUN)) == sorted(expected_names)
    for name, content in FILES.items():
        assert read_bytes(m.mnt / RUN / name) == content
    if data is not None:
        assert os.stat(m.mnt / RUN / "metadata.json").st_size == len(data)
        assert read_bytes(m.mnt / RUN / "metadata.json") == data
    good = expected_values(good_meta())
    if case == "unparsable_timestamps":
        good["run"].update(created_at="yesterday", expires_at="not a date")
    check_attrs(m, absent, strict, good)
    # the rest of the tenant is untouched
    assert os.getxattr(m.mnt / SHARED_RUN, "user.artifact.workflow_id") == b"wf-alice-shared"
    if warning == "one":
        wait_until(lambda: run_warnings(m), what="a warning naming the run")
    os.listdir(m.mnt / RUN)
    xattrs(m.mnt / RUN)
    allowed_counts = {0, 1} if warning == "optional" else {1}
    assert len(run_warnings(m)) in allowed_counts, run_warnings(m)


def test_metadata_broken_then_repaired_while_mounted(store, mounter):
    """metadata.json left half written: readers keep the run's last good
    metadata (it is a moment while it changes, then broken, one warning),
    until a good one is written."""
    run = store.add_run(ALICE, RUN, FILES, metadata=good_meta())
    good = copy.deepcopy(run.meta)
    m = mounter(store, ALICE, expect_warnings=[re.escape(RUN)])
    assert os.getxattr(m.mnt / RUN, "user.artifact.workflow_id") == b"wf-mal"
    store.write_metadata(run, b'{"run_id": "' + RUN.encode() + b'", "workflow_id": ')
    wait_until(lambda: run_warnings(m), what="a warning naming the run")
    assert "does not parse" in run_warnings(m)[0], run_warnings(m)
    assert os.getxattr(m.mnt / RUN, "user.artifact.workflow_id") == b"wf-mal"
    assert os.getxattr(m.mnt / RUN / "alpha.txt", "user.artifact.agent_id") == b"mal-agent-0"
    assert sorted(os.listdir(m.mnt / RUN)) == sorted(list(FILES) + ["metadata.json"])
    assert read_bytes(m.mnt / RUN / "alpha.txt") == FILES["alpha.txt"]
    good["workflow_id"] = "wf-repaired"
    store.write_metadata(run, good)
    wait_until(lambda: os.getxattr(m.mnt / RUN, "user.artifact.workflow_id") == b"wf-repaired",
               what="xattrs back after repair")
    assert os.getxattr(m.mnt / RUN / "alpha.txt", "user.artifact.agent_id") == b"mal-agent-0"
