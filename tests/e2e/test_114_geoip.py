"""Client areas from GeoIP: a node started with --geoip FILE (a MaxMind
DB) counts a request's demand in the bundled location nearest to where
the database puts the client's address.

The database is written by the test with Perl's MaxMind::DB::Writer
(Debian's libmaxmind-db-writer-perl): 127.0.0.0/8 is in Sydney, 10.0.0.0/8
has a country but no position. A real `verge control` and one agent node
at fra; requests from 127.0.0.1 without X-Verge-Client-Area must show up
as demand from syd, in the node's heartbeat and in the placement view."""

import subprocess
import time

import pytest

from harness import http_request, wait_for
from test_113_placement import deploy_version, placement_of, placing_control  # noqa: F401 (a fixture)

WRITER = r"""
use strict; use warnings;
use MaxMind::DB::Writer::Tree;
my ($out) = @ARGV;
my %types = (location => 'map', latitude => 'double', longitude => 'double',
             country => 'map', iso_code => 'utf8_string');
my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version => 4, record_size => 24, database_type => 'verge-test-City',
    languages => ['en'], description => {en => 'verge e2e test'},
    remove_reserved_networks => 0,  # 127/8 and 10/8 are reserved: keep them
    map_key_type_callback => sub { $types{$_[0]} });
$tree->insert_network('127.0.0.0/8', {location => {latitude => -33.8688, longitude => 151.2093},
                                      country => {iso_code => 'AU'}});
$tree->insert_network('10.0.0.0/8', {country => {iso_code => 'AU'}});
open my $fh, '>:raw', $out or die "$out: $!";
$tree->write_tree($fh);
close $fh or die "$out: $!";
"""

DYNAMIC = """\
name: web
placement:
  dynamic: {target: 50ms, min_demand: 1rps, min: 1, max: 2}
rollout: {window: 0s, min_requests: 0}
routes:
  - exact: /v
    respond: {body: "%s\\n"}
"""


@pytest.fixture
def mmdb(tmp_path):
    path = tmp_path / "test-city.mmdb"
    p = subprocess.run(["perl", "-e", WRITER, str(path)], capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr.decode()
    return path


@pytest.fixture
def cluster(tmp_path, verge_bin, verge, mmdb, placing_control):
    c = placing_control
    admin = c.admin_token()
    node_token = c.make_token("nodes", "node", admin)
    node = verge(None, args=["--control", c.url, "--token", node_token, "--node-id", "n-fra", "--location", "fra",
                             "--client-area-header", "--geoip", str(mmdb), "--label", "slots=10",
                             "--data", str(tmp_path / "data-fra")], apps=[])

    class Cluster:
        control = c

        @staticmethod
        def deploy(tag):
            deploy_version(c, admin, verge_bin, tmp_path, DYNAMIC, tag)

        @staticmethod
        def placement():
            return placement_of(c, admin)

        @staticmethod
        def heartbeat_demand():
            r = c.req("GET", "/v1/nodes", admin)
            assert r.status == 200, r
            n = next(n for n in r.json()["nodes"] if n["id"] == "n-fra")
            rep = n.get("report") or {}
            return ((rep.get("apps") or {}).get("web") or {}).get("demand") or {}

    Cluster.node = node
    yield Cluster


def get(v, headers=None):
    try:
        r = http_request(v.port, "GET", "/v", headers=headers, timeout=2)
        return r.status
    except OSError:
        return None


def test_demand_from_a_client_is_counted_where_the_database_puts_it(cluster):
    cluster.deploy("g1")
    assert wait_for(lambda: get(cluster.node) == 200, 15), cluster.placement()

    # 127.0.0.1 is in Sydney for the database: demand from syd, though the
    # node is at fra and the requests carry no header
    sent = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        sent += get(cluster.node) == 200
        if sent >= 40 and cluster.placement()["demand_rps"].get("syd", 0) > 1:
            break
        time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))
    p = cluster.placement()
    assert p["demand_rps"].get("syd", 0) > 1, p["demand_rps"]
    assert "fra" not in p["demand_rps"], p["demand_rps"]
    d = cluster.heartbeat_demand()
    assert d.get("syd", 0) >= 20 and "fra" not in d, d

    # the header still decides when it names a bundled location; one it
    # does not name leaves the client to the database
    for _ in range(5):
        assert get(cluster.node, {"X-Verge-Client-Area": "iad"}) == 200
        assert get(cluster.node, {"X-Verge-Client-Area": "nowhere"}) == 200
    before = d.get("syd", 0)
    assert wait_for(lambda: cluster.heartbeat_demand().get("iad", 0) == 5, 10), cluster.heartbeat_demand()
    d = cluster.heartbeat_demand()
    assert d["syd"] >= before + 5 and "fra" not in d, d


def run_node(verge_bin, tmp_path, *args):
    return subprocess.run([str(verge_bin), "node", "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data"),
                           "--log-format", "text"] + list(args),
                          capture_output=True, timeout=20, stdin=subprocess.DEVNULL)


AGENT = ["--control", "http://127.0.0.1:9", "--token", "t", "--node-id", "n1", "--location", "fra"]


def test_a_database_that_cannot_be_read_stops_the_start(tmp_path, verge_bin):
    p = run_node(verge_bin, tmp_path, *AGENT, "--geoip", "/nonexistent/GeoLite2-City.mmdb")
    assert p.returncode == 1, p
    err = p.stderr.decode()
    assert "cannot open the GeoIP database" in err and "/nonexistent/GeoLite2-City.mmdb" in err, err
    assert "No such file or directory" in err, err

    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a MaxMind DB\n" * 100)
    p = run_node(verge_bin, tmp_path, *AGENT, "--geoip", str(junk))
    assert p.returncode == 1, p
    err = p.stderr.decode()
    assert "cannot open the GeoIP database" in err and "metadata" in err, err

    # only agent mode counts demand: --geoip alone is a usage error
    p = run_node(verge_bin, tmp_path, "--app", str(tmp_path), "--geoip", str(junk))
    assert p.returncode == 2, p
    assert "--geoip needs --control" in p.stderr.decode(), p.stderr
