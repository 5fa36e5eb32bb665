"""verge sim (the scheduler over a simulated world) and verge check's
placement errors."""

import csv
import json
import re
import subprocess

import pytest

from harness import write_app

DIAG = re.compile(r"^(?P<file>\S*verge\.yaml):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$", re.M)

BIN = None


@pytest.fixture(autouse=True)
def _bin(verge_bin):
    global BIN
    BIN = str(verge_bin)


def run(argv, cwd=None, timeout=60):
    return subprocess.run([BIN] + argv, capture_output=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def sim_json(*extra):
    p = run(["sim", "--locations", "1500", "--apps", "150", "--steps", "12", "--json"] + list(extra))
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def decisions(doc):
    """Everything but the timings: what must repeat bit for bit."""
    return [{k: v for k, v in s.items() if not k.endswith("_ms") or k in ("p50_ms", "p95_ms")} for s in doc["per_step"]]


def test_sim_json_zero_violations_and_figures():
    doc = sim_json("--seed", "7")
    assert doc["locations"] == 1500 and doc["apps"] == 150 and doc["steps"] == 12
    assert doc["violations"] == 0
    steps = doc["per_step"]
    assert [s["step"] for s in steps] == list(range(12))
    for s in steps:
        assert s["violations"] == 0
        assert s["decision_ms"] > 0 and s["decision_ms"] < 5000
        assert 0 < s["p50_ms"] <= s["p95_ms"]
        assert 0 <= s["within_target"] <= 1 and 0 < s["slot_use"] <= 1
        assert s["placements"] > 0
    # after the first step, hysteresis keeps churn a small share of the placements
    later = steps[1:]
    assert sum(s["churn"] for s in later) / len(later) < 0.1 * steps[0]["placements"]
    # no stderr noise (no progress bar when stderr is not a terminal)


def test_sim_reproducible_with_the_same_seed():
    a, b, c = sim_json("--seed", "3"), sim_json("--seed", "3"), sim_json("--seed", "4")
    assert a["digest"] == b["digest"]
    assert decisions(a) == decisions(b)
    assert a["digest"] != c["digest"]


def test_sim_threads_make_the_same_decisions():
    one, two = sim_json("--seed", "5"), sim_json("--seed", "5", "--threads", "2")
    assert one["threads"] == 1 and two["threads"] == 2
    assert two["digest"] == one["digest"]
    assert decisions(two) == decisions(one)


def test_sim_sites():
    """Dynamic placement picks sites (towers of one 1-degree cell, one
    country and region), then one tower in each; --sites 0 makes every
    tower its own site. Either way two threads decide the same."""
    one = sim_json("--seed", "5")
    assert one["site_deg"] == 1 and 0 < one["sites"] < 1500
    flat, flat2 = sim_json("--seed", "5", "--sites", "0"), sim_json("--seed", "5", "--sites", "0", "--threads", "2")
    assert flat["sites"] == 1500 and flat["violations"] == 0
    assert flat["digest"] != one["digest"]
    assert flat2["digest"] == flat["digest"] and decisions(flat2) == decisions(flat)
    # no app runs twice in one site: a chosen location's site-mates are never chosen
    shared = 0
    for i in range(0, 150, 7):
        ex = sim_json("--seed", "5", "--steps", "2", "--explain", "app%04d" % i)["explain"]
        if ex["mode"] != "dynamic":
            continue
        chosen = set(ex["locations"])
        for d in ex["decisions"]:
            if d["verdict"] != "rejected" and "site_locations" in d:
                shared += 1
                assert d["site_size"] == len(d["site_locations"]) + 1 or len(d["site_locations"]) == 8
                assert not chosen & set(d["site_locations"]), d
    assert shared > 0  # the world has sites of several towers, and apps run in them
    for bad in ("11", "0.001", "x", "-1"):
        p = run(["sim", "--sites", bad])
        assert p.returncode == 2 and b"sites 0 or 0.01..10" in p.stderr, bad


def test_sim_text_and_csv(tmp_path):
    out = tmp_path / "sim.csv"
    p = run(["sim", "--locations", "800", "--apps", "60", "--steps", "5", "--csv", str(out)])
    assert p.returncode == 0, p.stderr.decode()
    text = p.stdout.decode()
    assert "place_ms" in text and "violations 0" in text and "digest" in text
    assert p.stderr == b""  # the progress bar is for terminals only
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 5
    assert set(rows[0]) >= {"step", "decision_ms", "p50_ms", "p95_ms", "within_target", "churn", "violations"}
    assert all(r["violations"] == "0" for r in rows)


def test_sim_bad_options():
    for argv in (["--locations", "0"], ["--apps", "x"], ["--steps"], ["--bogus"], ["--threads", "0"],
                 ["--threads", "65"]):
        p = run(["sim"] + argv)
        assert p.returncode == 2, argv
        assert b"usage: verge sim" in p.stderr
    assert run(["sim", "--help"]).returncode == 0


BAD = {
    "unknown-location": ("""\
        name: shop
        routes:
          - respond: ok
        placement:
          static: [fra, amz]
        """, 5, 17, ["app shop", "unknown location 'amz'", "did you mean 'ams'"]),
    "static-outside-allowed": ("""\
        name: shop
        routes:
          - respond: ok
        placement:
          static: [lhr, ams]
          enforce: {allow_countries: [DE, FR]}
        """, 5, 11, ["app shop", "entirely outside", "country GB is not in enforce.allow_countries [DE, FR]"]),
    "min-above-allowed": ("""\
        name: shop
        routes:
          - respond: ok
        placement:
          dynamic: {target: 20ms, min: 5}
          enforce: {allow_countries: [DE, FR]}
        """, 5, 32, ["app shop", "min 5", "3 known locations", "placement.enforce"]),
    "min-above-max": ("""\
        name: shop
        routes:
          - respond: ok
        placement:
          dynamic: {min: 4, max: 2}
        """, 5, 18, ["app shop", "min 4 is above max 2"]),
    "bad-unit": ("""\
        name: shop
        routes:
          - respond: ok
        placement:
          dynamic: {min_demand: 5 per second}
        """, 5, 25, ["min_demand", "5rps"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_check_placement_errors(tmp_path, case):
    manifest, line, col, words = BAD[case]
    d = write_app(tmp_path / "app", manifest)
    p = run(["check", str(d)])
    assert p.returncode == 1
    err = p.stderr.decode()
    m = DIAG.search(err)
    assert m, err
    assert (int(m.group("line")), int(m.group("col"))) == (line, col), err
    for w in words:
        assert w in m.group("msg"), err


def test_check_placement_ok(tmp_path):
    d = write_app(tmp_path / "app", """\
        name: shop
        routes:
          - respond: ok
        placement:
          dynamic: {target: 20ms, percentile: 95, min_demand: 5rps, min: 1, max: 10, scale_in_after: 10m}
          enforce: {allow_countries: [DE, FR], deny_regions: [], require_tags: [pci], residency: true}
          priority: 10
          resources: {cpu: 250m, memory: 128Mi}
        """)
    p = run(["check", str(d)])
    assert p.returncode == 0, p.stderr.decode()


def test_sim_explain_and_counts():
    doc = sim_json("--seed", "2", "--explain", "app0005")
    ex = doc["explain"]
    assert ex["app"] == "app0005" and ex["mode"] in ("static", "dynamic")
    assert ex["decisions"], ex
    for d in ex["decisions"]:
        assert d["verdict"] in ("chosen", "kept", "rejected")
        assert d["reason"]
        if d["reason"] == "policy":
            assert d["rule"]
    chosen = [d["location"] for d in ex["decisions"] if d["verdict"] != "rejected"]
    assert sorted(chosen) == sorted(ex["locations"])
    assert all("capacity_rejections" in s and "displaced" in s for s in doc["per_step"])
    p = run(["sim", "--locations", "800", "--apps", "60", "--steps", "2", "--explain", "app0001"])
    assert p.returncode == 0, p.stderr.decode()
    assert "app app0001 (priority" in p.stdout.decode()
    p = run(["sim", "--locations", "800", "--apps", "60", "--steps", "1", "--explain", "nope"])
    assert p.returncode == 2 and b"no app 'nope'" in p.stderr


def test_sim_progress_bar_on_a_terminal(tmp_path):
    """On a terminal stderr carries a progress bar; the rows still reach stdout."""
    script = subprocess.run(["which", "script"], capture_output=True)
    if script.returncode != 0:
        pytest.skip("no script(1) to give verge a terminal")
    cmd = "%s sim --locations 800 --apps 60 --steps 4" % BIN
    p = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out
    assert "] step 4/4" in out and "violations 0" in out
