"""verge check / verge node: manifest validation and the command line."""

import re
import subprocess
from pathlib import Path

import pytest

from harness import free_port, write_app

DIAG = re.compile(r"^(?P<file>\S*verge\.yaml):(?P<line>\d+):(?P<col>\d+): (?P<msg>.+)$", re.M)
# the node logs JSON lines: the diagnostic is inside a string there
DIAG_IN_JSON = re.compile(r'"(?P<file>[^"\s]*verge\.yaml):(?P<line>\d+):(?P<col>\d+): (?P<msg>[^"]+)"')

FULL = """\
name: hello
hosts: [a.test, "*.b.test"]
limits: {header_size: 16k, body_size: 1m, header_timeout: 2s, idle_timeout: 5s, max_connections: 100}
origins:
  api:
    servers: ["http://127.0.0.1:9", {url: "http://127.0.0.1:10", weight: 2}]
    balance: round_robin
    health: {path: /healthz, interval: 200ms, timeout: 200ms, rise: 1, fall: 2}
    timeouts: {connect: 1s, read: 2s, total: 5s}
    retries: 1
    passive: {max_fails: 2, fail_timeout: 1s}
  users:
    servers: ["http://127.0.0.1:11"]
    balance: hash
    hash_on: header:X-User
  carts:
    servers: ["http://127.0.0.1:12", "http://127.0.0.1:13"]
    balance: least_conn
routes:
  - path: /api
    methods: [GET, POST]
    proxy: api
    strip_prefix: /api
  - path: /users
    proxy: users
  - path: /carts
    proxy: carts
  - path: /inline
    proxy: http://127.0.0.1:14
  - exact: /ping
    respond: {status: 200, body: "pong\\n", content_type: text/plain}
  - glob: /img/*.png
    static: public
  - path: /old
    redirect: {to: /new, status: 301}
  - path: /docs
    static: {dir: public, index: [index.html]}
  - path: /
    static: public
"""


BIN = None


@pytest.fixture(autouse=True)
def _bin(verge_bin):
    global BIN
    BIN = str(verge_bin)


def run(argv, cwd, timeout=20):
    return subprocess.run([BIN] + argv, capture_output=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def check(tmp_path, manifest, files=None, name="app"):
    d = write_app(tmp_path / name, manifest, files if files is not None else {"public/index.html": "hi\n"})
    return d, run(["check", str(d)], tmp_path)


def diag(tmp_path, p, manifest_path, pattern=DIAG):
    """The first file:line:col diagnostic on stderr; asserts it names our file."""
    err = p.stderr.decode("utf-8", "replace")
    m = pattern.search(err)
    assert m, "no file:line:col diagnostic on stderr:\n%s" % err
    f = Path(m.group("file"))
    if not f.is_absolute():
        f = tmp_path / f
    assert f.resolve() == manifest_path.resolve(), err
    return int(m.group("line")), int(m.group("col")), m.group("msg"), err


def test_check_full_manifest_ok(tmp_path):
    d, p = check(tmp_path, FULL)
    assert p.returncode == 0, p.stderr.decode()
    assert not DIAG.search(p.stderr.decode())


def test_check_minimal_manifest_ok(tmp_path):
    d, p = check(tmp_path, """\
        name: tiny
        routes:
          - exact: /ping
            respond: {body: pong}
        """, files={})
    assert p.returncode == 0, p.stderr.decode()


# (manifest, line, col or None, substrings expected in the message (any case))
ERRORS = {
    "unknown-top-key": ("""\
        name: hello
        rotes:
          - exact: /ping
            respond: {body: pong}
        """, 2, 1, ["rotes", "routes"]),
    "unknown-route-key": ("""\
        name: hello
        routes:
          - exact: /ping
            respond: {body: pong}
          - path: /
            statc: public
        """, 6, 5, ["statc", "static"]),
    "unknown-origin-key": ("""\
        name: hello
        origins:
          api:
            servers: ["http://127.0.0.1:9"]
            balanse: round_robin
        routes:
          - path: /
            proxy: api
        """, 5, 5, ["balanse", "balance"]),
    "unknown-limits-key": ("""\
        name: hello
        limits: {header_size: 16k, bodysize: 1m}
        routes:
          - exact: /ping
            respond: {body: pong}
        """, 2, 28, ["bodysize", "body_size"]),
    "undefined-origin": ("""\
        name: hello
        origins:
          api:
            servers: ["http://127.0.0.1:9"]
        routes:
          - path: /
            proxy: apii
        """, 7, None, ["apii"]),
    "bad-balance": ("""\
        name: hello
        origins:
          api:
            servers: ["http://127.0.0.1:9"]
            balance: roundrobin
        routes:
          - path: /
            proxy: api
        """, 5, None, ["roundrobin"]),
    "bad-method": ("""\
        name: hello
        routes:
          - exact: /ping
            methods: [GET, FETCH]
            respond: {body: pong}
        """, 4, None, ["FETCH"]),
    "bad-size": ("""\
        name: hello
        limits:
          body_size: 12xb
        routes:
          - exact: /ping
            respond: {body: pong}
        """, 3, None, []),
    "bad-duration": ("""\
        name: hello
        origins:
          api:
            servers: ["http://127.0.0.1:9"]
            health: {path: /h, interval: soon}
        routes:
          - path: /
            proxy: api
        """, 5, None, []),
    "zero-weight": ("""\
        name: hello
        origins:
          api:
            servers: [{url: "http://127.0.0.1:9", weight: 0}]
        routes:
          - path: /
            proxy: api
        """, 4, None, []),
    "bad-server-url": ("""\
        name: hello
        origins:
          api:
            servers: ["ftp://127.0.0.1:9"]
        routes:
          - path: /
            proxy: api
        """, 4, None, []),
    "no-servers": ("""\
        name: hello
        origins:
          api:
            servers: []
        routes:
          - path: /
            proxy: api
        """, 4, None, []),
    "missing-name": ("""\
        routes:
          - exact: /ping
            respond: {body: pong}
        """, 1, None, ["name"]),
    "bad-name": ("""\
        name: Hello_World
        routes:
          - exact: /ping
            respond: {body: pong}
        """, 1, None, []),
    "route-without-action": ("""\
        name: hello
        routes:
          - exact: /ping
        """, 3, None, []),
    "route-two-actions": ("""\
        name: hello
        routes:
          - exact: /ping
            respond: {body: pong}
            redirect: {to: /x}
        """, 3, None, []),
    "route-path-not-absolute": ("""\
        name: hello
        routes:
          - path: ping
            respond: {body: pong}
        """, 3, None, []),
    "static-dir-missing": ("""\
        name: hello
        routes:
          - path: /
            static: nosuchdir
        """, 4, None, ["nosuchdir"]),
    "redirect-bad-status": ("""\
        name: hello
        routes:
          - path: /old
            redirect: {to: /new, status: 200}
        """, 4, None, []),
    "routes-not-a-list": ("""\
        name: hello
        routes: {path: /}
        """, 2, None, []),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_check_reports_error_with_position(tmp_path, case):
    manifest, line, col, words = ERRORS[case]
    d, p = check(tmp_path, manifest)
    assert p.returncode == 1, "exit %d, stderr:\n%s" % (p.returncode, p.stderr.decode())
    got_line, got_col, msg, err = diag(tmp_path, p, d / "verge.yaml")
    assert got_line == line, err
    if col is not None:
        assert got_col == col, err
    assert got_col >= 1, err
    for w in words:
        assert w.lower() in msg.lower(), err


def test_check_unknown_key_suggests_the_right_one(tmp_path):
    d, p = check(tmp_path, """\
        name: hello
        routes:
          - exact: /ping
            respnd: {body: pong}
        """)
    assert p.returncode == 1
    line, col, msg, err = diag(tmp_path, p, d / "verge.yaml")
    assert (line, col) == (4, 5), err
    assert "did you mean" in msg.lower(), err
    assert "respond" in msg, err


def test_check_yaml_syntax_error(tmp_path):
    d, p = check(tmp_path, """\
        name: hello
        routes:
          - exact: /ping
            respond: {body: pong
          - path: /
        """)
    assert p.returncode == 1
    line, col, msg, err = diag(tmp_path, p, d / "verge.yaml")
    assert 4 <= line <= 6, err


def test_check_not_a_mapping(tmp_path):
    d, p = check(tmp_path, "- just\n- a list\n")
    assert p.returncode == 1
    line, col, msg, err = diag(tmp_path, p, d / "verge.yaml")
    assert line == 1, err


def test_check_missing_manifest(tmp_path):
    (tmp_path / "empty").mkdir()
    p = run(["check", str(tmp_path / "empty")], tmp_path)
    assert p.returncode != 0
    assert "verge.yaml" in p.stderr.decode(), p.stderr.decode()


def test_check_missing_dir(tmp_path):
    p = run(["check", str(tmp_path / "nope")], tmp_path)
    assert p.returncode != 0
    assert p.stderr.strip(), "no message on stderr"


@pytest.mark.parametrize("argv", [
    [], ["bogus"], ["check"], ["node"], ["node", "--listen", "127.0.0.1:{port}"], ["node", "--app"],
    ["node", "--app", "{app}", "--listen", "127.0.0.1:{port}", "--workers", "zero"],
    ["node", "--app", "{app}", "--listen", "127.0.0.1:{port}", "--bogus-flag"],
    ["node", "--app", "{app}", "--listen", "nonsense"],
    ["node", "--app", "{app}", "--listen", "127.0.0.1:{port}", "--tls-listen", "127.0.0.1:{port2}"],
], ids=["no-args", "unknown-command", "check-no-dir", "node-no-app", "node-listen-only", "node-app-no-value",
        "node-bad-workers", "node-unknown-flag", "node-bad-listen", "node-tls-without-cert"])
def test_bad_command_line_exits_nonzero(tmp_path, argv):
    app = write_app(tmp_path / "app", "name: ok\nroutes:\n  - exact: /ping\n    respond: {body: pong}\n")
    subst = {"app": str(app), "port": free_port(), "port2": free_port()}
    p = run([a.format(**subst) for a in argv], tmp_path, timeout=10)
    assert p.returncode not in (0, None), (p.stdout, p.stderr)
    assert p.returncode > 0, "died of a signal: %d" % p.returncode
    assert p.stderr.strip(), "no message on stderr"


def test_node_refuses_broken_manifest(tmp_path):
    d = write_app(tmp_path / "app", """\
        name: hello
        routes:
          - exact: /ping
            respnd: {body: pong}
        """)
    p = run(["node", "--app", str(d), "--listen", "127.0.0.1:%d" % free_port()], tmp_path)
    assert p.returncode > 0, p
    line, col, msg, err = diag(tmp_path, p, d / "verge.yaml", DIAG_IN_JSON)
    assert (line, col) == (4, 5), err


def test_check_two_apps_same_error_names_each_file(tmp_path):
    """The diagnostic names the manifest it comes from (not a fixed name)."""
    da, pa = check(tmp_path, "name: a\nroutes: 5\n", name="first")
    db, pb = check(tmp_path, "name: b\n\nroutes: 5\n", name="second")
    assert pa.returncode == 1 and pb.returncode == 1
    assert diag(tmp_path, pa, da / "verge.yaml")[0] == 2
    assert diag(tmp_path, pb, db / "verge.yaml")[0] == 3


EXAMPLES = sorted(p.parent for p in (Path(__file__).resolve().parents[2] / "examples").glob("*/verge.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid(tmp_path, example):
    p = run(["check", str(example)], tmp_path)
    assert p.returncode == 0, p.stderr.decode()


def test_current_directory_is_the_default_app(tmp_path):
    """`verge check` and `verge node` with no DIR use ./verge.yaml."""
    d = write_app(tmp_path / "here", "name: here\nroutes:\n  - exact: /x\n    respond: here\n")
    p = run(["check"], d)
    assert p.returncode == 0, p.stderr
    assert b"app here" in p.stdout
    port = free_port()
    node = subprocess.Popen([BIN, "node", "--listen", "127.0.0.1:%d" % port, "--workers", "1"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        import http.client
        import time
        deadline = time.time() + 10
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/x")
                r = c.getresponse()
                assert (r.status, r.read()) == (200, b"here")
                break
            except OSError:
                assert time.time() < deadline and node.poll() is None, node.stderr.read()
                time.sleep(0.05)
    finally:
        node.terminate()
        assert node.wait(10) == 0
