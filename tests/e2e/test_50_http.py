"""HTTP/1.x connection handling: keep-alive, pipelining, bodies on routes
that do not read them, HTTP/1.0."""

import pytest

from harness import RawConn

MANIFEST = """\
name: h1
routes:
  - exact: /a
    respond: {body: "AAA"}
  - exact: /b
    respond: {body: "BB"}
  - exact: /c
    respond: {status: 201, body: "C"}
  - exact: /ping
    respond: {body: "pong\\n"}
"""


@pytest.fixture
def v(verge):
    return verge(MANIFEST)


def test_keep_alive_http11(v):
    with RawConn(v.port) as c:
        for path, body in [("/a", b"AAA"), ("/b", b"BB"), ("/a", b"AAA"), ("/nope", None)]:
            r = c.request("GET", path)
            if body is None:
                assert r.status == 404
            else:
                assert (r.status, r.body) == (200, body), r
            assert "close" not in (r.headers.get("Connection") or "").lower()
        assert not c.wait_closed(0.3)


def test_connection_close_honoured(v):
    with RawConn(v.port) as c:
        r = c.request("GET", "/a", headers={"Connection": "close"})
        assert r.body == b"AAA"
        assert c.wait_closed(2)


def test_pipelining_in_order(v):
    with RawConn(v.port) as c:
        c.send(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
        got = [c.read_response() for _ in range(3)]
    assert [(r.status, r.body) for r in got] == [(200, b"AAA"), (200, b"BB"), (201, b"C")]


def test_pipelining_with_bodies_and_head(v):
    with RawConn(v.port) as c:
        c.send(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
               b"HEAD /b HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
               b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        a = c.read_response()
        b = c.read_response("HEAD")
        p = c.read_response()
        bb = c.read_response()
    assert (a.status, a.body) == (200, b"AAA")
    assert (b.status, b.body) == (200, b"")
    assert (p.status, p.body) == (200, b"pong\n")
    assert (bb.status, bb.body) == (200, b"BB")


@pytest.mark.parametrize("path,status,body", [("/a", 200, b"AAA"), ("/c", 201, b"C")])
def test_fixed_response_has_content_length_and_keeps_alive(v, path, status, body):
    """A respond route knows its length: Content-Length, and the connection
    stays open whatever the status."""
    with RawConn(v.port) as c:
        r = c.request("GET", path)
        assert (r.status, r.body) == (status, body)
        assert r.headers.get("Content-Length") == str(len(body)), r
        assert (r.headers.get("Connection") or "").lower() != "close", r
        assert c.request("GET", "/b").body == b"BB"


def test_chunked_body_to_respond_route_is_drained(v):
    with RawConn(v.port) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")
        # the body was consumed: the next request on the connection is parsed
        # from the right place
        r = c.request("GET", "/a")
        assert (r.status, r.body) == (200, b"AAA")


def test_large_body_to_respond_route(v):
    body = b"z" * 300000
    with RawConn(v.port, timeout=10) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")
        r = c.request("GET", "/b")
        assert (r.status, r.body) == (200, b"BB")


def test_expect_100_continue(v):
    with RawConn(v.port) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        first = c._read_until(b"\r\n\r\n")
        if first.split(b" ")[1] == b"100":
            c.send(b"data")
            r = c.read_response()
        else:
            # a final answer without 100 is allowed; then the body must not be
            # parsed as a request
            c.send(b"data")
            c.buf = first + c.buf
            r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")


def test_http10(v):
    with RawConn(v.port) as c:
        c.send(b"GET /a HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"AAA"), r
        assert r.version in ("HTTP/1.0", "HTTP/1.1")
        assert "chunked" not in (r.headers.get("Transfer-Encoding") or "")
        assert c.wait_closed(2), "HTTP/1.0 without keep-alive must close"


def test_http10_keep_alive(v):
    with RawConn(v.port, timeout=2) as c:
        c.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.body == b"AAA"
        if (r.headers.get("Connection") or "").lower() == "keep-alive":
            c.send(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert c.read_response().body == b"BB"
        else:
            assert c.wait_closed(2)


def test_http11_without_host_is_400(v):
    with RawConn(v.port) as c:
        c.send(b"GET /a HTTP/1.1\r\n\r\n")
        r = c.read_response()
    assert r.status == 400, r


def test_head_has_no_body(v):
    with RawConn(v.port) as c:
        r = c.request("HEAD", "/a")
        assert r.status == 200 and r.body == b""
        assert r.headers.get("Content-Length") in (None, "3"), r
        r = c.request("GET", "/b")  # would be garbled if HEAD had sent a body
        assert r.body == b"BB"


def test_absolute_form_request_target(v):
    with RawConn(v.port) as c:
        c.send(b"GET http://x.test/a HTTP/1.1\r\nHost: x.test\r\n\r\n")
        r = c.read_response()
    assert (r.status, r.body) == (200, b"AAA")


def test_date_header(v):
    r = v.get("/a")
    assert r.headers.get("Date"), r
