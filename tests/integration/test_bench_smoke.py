"""tools/bench keeps working: a smoke run with tiny sizes.

This is not a timed test: no figure is compared with a target, only checked
to be there and positive.  The real benchmark is `tools/bench` at its
default sizes (docs/performance.md)."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import BIN, REPO_ROOT, fuse_mounts

BENCH = REPO_ROOT / "tools" / "bench"

# Every measurement the tool takes, and who takes part in it (the others
# are n/a: bindfs cannot promote, and has no index to mount).
READS = {"native", "bindfs", "artifactfs", "afs-nopt"}    # afs-nopt: -o passthrough=off
EXPECTED = {
    "read_first": READS,
    "read_second": READS,
    "read_requests": {"artifactfs", "afs-nopt"},
    "fio_1": READS,
    "fio_16": READS,
    "walk_cold": {"native", "bindfs", "artifactfs"},
    "walk_warm": {"native", "bindfs", "artifactfs"},
    "ls_cold": {"native", "bindfs", "artifactfs"},
    "ls_warm": {"native", "bindfs", "artifactfs"},
    "promote_small": {"native", "artifactfs"},
    "promote_big": {"native", "artifactfs"},
    "promote_w1": {"native", "artifactfs"},
    "promote_w4": {"native", "artifactfs"},
    "promote_w8": {"native", "artifactfs"},
    "index_build": {"artifactfs"},
    "index_mount": {"artifactfs"},
    "index_rss_mount": {"artifactfs"},
    "index_walk": {"native", "artifactfs"},
    "index_rss_walk": {"artifactfs"},
    "parallel": READS,
}
TARGETS = ("native", "bindfs", "artifactfs", "afs-nopt")
# Measurements whose figure may be 0: a count of what passthrough spared.
COUNTS = {"read_requests"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "out.json"
    work = tmp / "work"
    r = subprocess.run(["/usr/bin/python3", str(BENCH), "--smoke", "--bin", str(BIN),
                        "--json", str(out), "--workdir", str(work)],
                       cwd=tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300)
    return r, out, work


def test_smoke_run_exits_0_and_cleans_up(smoke):
    r, out, work = smoke
    assert r.returncode == 0, f"tools/bench --smoke exited {r.returncode}\n" \
                              f"stdout:\n{r.stdout}\nstderr:\n{r.stderr[-5000:]}"
    assert not work.exists(), "the work dir is left behind without --keep"
    assert not [m for m in fuse_mounts() if m.startswith(str(work))]


def test_smoke_prints_the_table(smoke):
    r, out, _ = smoke
    lines = r.stdout.splitlines()
    header = [ln for ln in lines if ln.startswith("| measurement")]
    assert header, r.stdout
    for col in ("native", "bindfs", "artifactfs", "afs, passthrough off", "afs/native",
                "afs/bindfs", "afs off/native"):
        assert col in header[0]
    data = json.loads(out.read_text())
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| measurement")]
    assert len(rows) == len(EXPECTED)
    for m in data["measurements"]:
        row = [ln for ln in rows if ln.startswith(f"| {m['name']} ")]
        assert len(row) == 1, f"no table row for {m['name']!r}"
        cells = [c.strip() for c in row[0].strip("|").split("|")]
        assert len(cells) == 8
        for target, cell in zip(TARGETS, cells[1:5]):
            if target in EXPECTED[m["id"]]:
                assert cell not in ("n/a", "-"), row[0]
            else:
                assert cell == "n/a", row[0]


def test_smoke_writes_every_measurement(smoke):
    _, out, _ = smoke
    data = json.loads(out.read_text())
    by_id = {m["id"]: m for m in data["measurements"]}
    assert set(by_id) == set(EXPECTED)
    for mid, takes_part in EXPECTED.items():
        m = by_id[mid]
        assert m["unit"] and m["better"] in ("higher", "lower")
        for target in TARGETS:
            res = m["results"][target]
            if target not in takes_part:
                assert res is None, (mid, target)
                continue
            assert res["repeats"], (mid, target)
            if mid in COUNTS:
                assert all(v >= 0 for v in res["repeats"]), (mid, target, res)
                continue
            assert all(v > 0 for v in res["repeats"]), (mid, target, res)
            assert res["median"] > 0, (mid, target, res)
        for other in ("native", "bindfs"):
            ratio = m["ratios"][f"artifactfs/{other}"]
            if other in takes_part:
                assert ratio > 0, (mid, other)
                expected = m["results"]["artifactfs"]["median"] / m["results"][other]["median"]
                assert ratio == pytest.approx(expected)
            else:
                assert ratio is None, (mid, other)


def test_smoke_counts_the_reads_passthrough_spares(smoke):
    """With passthrough off every read is a READ request to the daemon;
    with passthrough in use (the daemons' statistics say), none is."""
    _, out, _ = smoke
    data = json.loads(out.read_text())
    [m] = [m for m in data["measurements"] if m["id"] == "read_requests"]
    assert m["results"]["afs-nopt"]["median"] > 0
    assert all(counts["OPEN"] >= 2 for counts in m["extra"]["requests"]["afs-nopt"])
    passthrough = any(d.get("stats", {}).get("passthrough") for d in data["daemons"])
    if passthrough:
        assert m["results"]["artifactfs"]["median"] == 0, m
    else:
        assert m["results"]["artifactfs"]["median"] > 0, m


def test_smoke_json_describes_the_run(smoke):
    _, out, _ = smoke
    data = json.loads(out.read_text())
    assert data["problems"] == []
    assert data["params"]["smoke"] is True
    machine = data["machine"]
    assert machine["nproc"] >= 1 and machine["memory_gib"] > 0
    assert machine["kernel"] and machine["cpu_model"] is not None
    assert data["artifactfs"]["bin"] == str(BIN.resolve())
    assert len(data["artifactfs"]["bin_sha256"]) == 64
    assert "commit" in data["artifactfs"]
    daemons = data["daemons"]
    assert {d["kind"] for d in daemons} == {"artifactfs", "bindfs"}
    assert all(d.get("exit") == 0 for d in daemons), daemons


def test_bench_tenants_smoke(tmp_path):
    """tools/bench-tenants with 3 tiny tenants: both ways of serving them
    are mounted, walked, measured and unmounted; the figures are there."""
    out = tmp_path / "tenants.json"
    work = tmp_path / "work"
    r = subprocess.run(["/usr/bin/python3", str(REPO_ROOT / "tools" / "bench-tenants"),
                        "--bin", str(BIN), "--tenants", "3", "--runs", "1", "--files", "2",
                        "--idle", "0.5", "--workdir", str(work), "--json", str(out)],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not [m for m in fuse_mounts() if m.startswith(str(work))]
    results = json.loads(out.read_text())["results"]
    assert results["all"]["daemons"] == 1 and results["each"]["daemons"] == 3
    for way in ("all", "each"):
        assert results[way]["files_walked"] == 3 * 1 * 3    # 2 files + metadata.json
        assert results[way]["rss_mib"] > 0 and results[way]["idle_cpu_ticks"] >= 0
    assert "resident memory (MiB)" in r.stdout
