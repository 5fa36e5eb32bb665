"""HTTP/2 (h2c prior knowledge, ALPN) and TLS listeners."""

import hashlib
import json
import re
import socket
import ssl
import subprocess

import pytest

from harness import free_port, http_request, pattern_bytes

MANIFEST = """\
name: h2
routes:
  - exact: /ping
    respond: {body: "pong\\n"}
  - path: /api
    proxy: %s
  - path: /
    static: public
"""
FILES = {"public/index.html": "<h1>h2</h1>\n", "public/big.bin": bytes(range(256)) * 4096}


def run(argv, timeout=20):
    return subprocess.run(argv, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def v(verge, origin):
    return verge(MANIFEST % origin("a").url, FILES)


@pytest.fixture
def vt(verge, origin, tls_cert):
    return verge(MANIFEST % origin("a").url, FILES, tls=tls_cert)


def tls_connect(port, alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(alpn)
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return ctx.wrap_socket(s, server_hostname="localhost")


def test_h2c_prior_knowledge_nghttp(v):
    p = run(["nghttp", "-v", "http://127.0.0.1:%d/ping" % v.port])
    out = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, out + p.stderr.decode()
    assert re.search(r":status: 200", out), out
    assert "pong" in out, out


def test_h2c_h2load(v):
    p = run(["h2load", "-n100", "-c2", "-m10", "http://127.0.0.1:%d/ping" % v.port], timeout=30)
    out = p.stdout.decode()
    assert p.returncode == 0, out
    assert re.search(r"requests: 100 total, 100 started, 100 done, 100 succeeded", out), out
    assert re.search(r"status codes: 100 2xx", out), out


def test_h2c_static_and_proxy(v):
    p = run(["nghttp", "http://127.0.0.1:%d/big.bin" % v.port])
    assert p.returncode == 0
    assert p.stdout == FILES["public/big.bin"]
    p = run(["nghttp", "-H", "x-custom: h2", "http://127.0.0.1:%d/api/hello" % v.port])
    assert p.returncode == 0, p.stderr
    info = json.loads(p.stdout)
    assert info["path"] == "/api/hello"
    hdrs = {k.lower(): val for k, val in info["headers"]}
    assert hdrs.get("x-custom") == "h2"
    assert hdrs.get("x-forwarded-proto") == "http"


def test_h2c_post_body_proxied(v, tmp_path):
    data = tmp_path / "body"
    data.write_bytes(b"q" * 100000)
    p = run(["nghttp", "-d", str(data), "http://127.0.0.1:%d/api/up" % v.port])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["body_len"] == 100000


def test_h2c_large_proxied_download(v):
    """Flow control: a 16 MiB body through the proxy over one h2 stream."""
    n = 16 << 20
    p = run(["nghttp", "http://127.0.0.1:%d/api/download/%d" % (v.port, n)], timeout=60)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout) == n
    assert hashlib.sha256(p.stdout).digest() == hashlib.sha256(pattern_bytes(n)).digest()


def test_h2c_many_streams_to_proxy(v):
    p = run(["h2load", "-n400", "-c4", "-m32", "http://127.0.0.1:%d/api/x" % v.port], timeout=60)
    out = p.stdout.decode()
    assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded", out), out
    assert re.search(r"status codes: 400 2xx", out), out


def test_h2c_upgrade_or_h1_still_works(v):
    r = http_request(v.port, "GET", "/ping")
    assert (r.status, r.body) == (200, b"pong\n")


def test_tls_listen_https(vt):
    r = http_request(vt.tls_port, "GET", "/ping", tls=True)
    assert (r.status, r.body) == (200, b"pong\n")


def test_tls_x_forwarded_proto_https(vt):
    r = http_request(vt.tls_port, "GET", "/api/x", tls=True)
    assert r.status == 200
    hdrs = {k.lower(): val for k, val in r.json()["headers"]}
    assert hdrs.get("x-forwarded-proto") == "https", hdrs


@pytest.mark.parametrize("offer,want", [(["h2", "http/1.1"], "h2"), (["http/1.1"], "http/1.1")])
def test_alpn(vt, offer, want):
    with tls_connect(vt.tls_port, offer) as s:
        assert s.selected_alpn_protocol() == want


def test_curl_http2_over_tls(vt):
    p = run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}",
             "https://127.0.0.1:%d/ping" % vt.tls_port])
    assert p.stdout.decode() == "2 200", (p.stdout, p.stderr)


def test_curl_http11_over_tls(vt):
    p = run(["curl", "-sk", "--http1.1", "-w", " %{http_version} %{http_code}",
             "https://127.0.0.1:%d/ping" % vt.tls_port])
    assert p.stdout.decode() == "pong\n 1.1 200", (p.stdout, p.stderr)


def test_h2load_over_tls(vt):
    p = run(["h2load", "-n50", "-c2", "https://127.0.0.1:%d/ping" % vt.tls_port], timeout=30)
    out = p.stdout.decode()
    assert "50 succeeded" in out, out
    assert re.search(r"Application protocol: h2", out), out


def test_plain_http_on_tls_port_refused(vt):
    r = None
    try:
        r = http_request(vt.tls_port, "GET", "/ping", timeout=3)
    except Exception:
        pass
    assert r is None or r.status == 400


def test_tls_from_manifest_listen(verge, tls_cert, tmp_path):
    port = free_port()
    cert, key = tls_cert
    manifest = """\
        name: tlsm
        listen:
          - addr: "127.0.0.1:%d"
            tls: {cert: "%s", key: "%s"}
        routes:
          - exact: /ping
            respond: {body: "pong over manifest tls\\n"}
        """ % (port, cert, key)
    v = verge(manifest)
    r = http_request(port, "GET", "/ping", tls=True)
    assert (r.status, r.body) == (200, b"pong over manifest tls\n")
    with tls_connect(port, ["h2", "http/1.1"]) as s:
        assert s.selected_alpn_protocol() == "h2"
    assert v.alive()


def test_tls_manifest_relative_paths(verge, tls_cert):
    port = free_port()
    cert, key = tls_cert
    manifest = """\
        name: tlsr
        listen:
          - addr: "127.0.0.1:%d"
            tls: {cert: certs/c.pem, key: certs/k.pem}
        routes:
          - exact: /ping
            respond: {body: "rel\\n"}
        """ % port
    verge(manifest, {"certs/c.pem": cert.read_bytes(), "certs/k.pem": key.read_bytes()})
    r = http_request(port, "GET", "/ping", tls=True)
    assert (r.status, r.body) == (200, b"rel\n")


def test_bad_cert_fails_to_start(verge, tmp_path, tls_cert):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    v = verge("name: x\nroutes:\n  - exact: /ping\n    respond: {body: x}\n", tls=(bad, tls_cert[1]), wait=False)
    try:
        rc = v.proc.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail("verge started with a broken certificate")
    assert rc > 0
    assert v.stderr().strip()
