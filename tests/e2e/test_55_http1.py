"""verge's own HTTP/1 connection layer (src/http/http1.c): timeouts told
apart, bodies larger than the buffer streamed or read away, keep-alive kept
where it is safe and refused where it is not, over raw sockets."""

import socket
import time

import pytest

from harness import RawConn

MANIFEST = """\
name: h1
limits: {header_size: 4k, body_size: 1m, header_timeout: 1s, idle_timeout: 3s, max_connections: 1000}
routes:
  - exact: /ping
    respond: {body: "pong\\n"}
  - path: /
    respond: {body: "root\\n"}
"""


@pytest.fixture
def v(verge):
    v = verge(MANIFEST)
    yield v
    assert v.alive(), v.logs()


def chunked(data, size=8192):
    out = b""
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def test_partial_head_gets_408_after_header_timeout(v):
    with RawConn(v.port, timeout=6) as c:
        c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        t = time.monotonic()
        assert c.wait_closed(4)
        took = time.monotonic() - t
    assert 0.7 <= took < 2.5, took
    assert c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:100]
    assert "header_timeout" in v.logs()


def test_idle_timeout_is_not_the_header_timeout(v):
    """After a response the connection waits idle_timeout (3s), not
    header_timeout (1s), and then closes without a response."""
    with RawConn(v.port, timeout=8) as c:
        assert c.request("GET", "/ping").status == 200
        assert not c.wait_closed(1.8), "closed after header_timeout, not idle_timeout"
        r = c.request("GET", "/ping")  # still usable
        assert r.status == 200
        t = time.monotonic()
        assert c.wait_closed(5)
        took = time.monotonic() - t
        assert c.buf == b"", c.buf[:100]
    assert 2.5 <= took < 4.5, took


def test_head_clock_starts_at_first_byte_after_idle(v):
    """A keep-alive connection that idles 2s, then sends half a head, still
    gets the full header_timeout for it, then 408."""
    with RawConn(v.port, timeout=8) as c:
        assert c.request("GET", "/ping").status == 200
        time.sleep(2)
        c.send(b"GET /ping HTTP/1.1\r\n")
        t = time.monotonic()
        assert c.wait_closed(4)
        took = time.monotonic() - t
    assert 0.7 <= took < 2.5, took
    assert c.buf.startswith(b"HTTP/1.1 408 "), c.buf[:100]


def test_large_chunked_body_to_respond_route_keeps_connection(v):
    body = chunked(b"q" * 300000)
    with RawConn(v.port, timeout=10) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")
        r = c.request("GET", "/other")
        assert (r.status, r.body) == (200, b"root\n")


def test_pipelined_request_after_streamed_body(v):
    body = b"z" * 200000
    with RawConn(v.port, timeout=10) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
               b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
        r1 = c.read_response()
        r2 = c.read_response()
    assert (r1.status, r1.body, r2.status, r2.body) == (200, b"pong\n", 200, b"root\n")


def test_large_body_with_expect_and_no_continue_closes(v):
    """The handler answers without reading: the client never got 100
    Continue, so it may never send the body; the node must not wait for it
    on a keep-alive connection."""
    with RawConn(v.port, timeout=6) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 500000\r\nExpect: 100-continue\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")
        assert r.headers.get("connection").lower() == "close"
        assert c.wait_closed(3)


def test_declared_body_over_limit_413_before_reading(v):
    with RawConn(v.port, timeout=6) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + b"a" * 1000)
        r = c.read_response()
        assert r.status == 413
        assert r.headers.get("connection").lower() == "close"


def test_chunked_body_over_limit_not_read_past_the_limit(v):
    """A route that does not read bodies answers at once; the node then
    reads the rest away only up to limits.body_size, and closes."""
    body = chunked(b"a" * (4 << 20), size=65536)
    with RawConn(v.port, timeout=10) as c:
        try:
            c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = c.read_response()
        assert r.status in (200, 413), r
        assert c.wait_closed(3)
    assert "limits.body_size" in v.logs()


def test_half_close_after_request_still_answered(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response()
        assert (r.status, r.body) == (200, b"pong\n")
        assert c.wait_closed(2)


def test_head_over_header_size_431(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n")
        r = c.read_response()
    assert r.status == 431


def test_unknown_transfer_coding_501(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"POST /ping HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n")
        r = c.read_response()
    assert r.status == 501


def test_head_method_has_length_but_no_body(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\nGET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response(method="HEAD")
        assert r.status == 200 and r.headers.get("content-length") == "5" and r.body == b""
        r = c.read_response()
        assert r.body == b"pong\n"


def test_http10_keep_alive_on_request(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /ping HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.headers.get("connection").lower() == "keep-alive"
        c.send(b"GET /ping HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200 and r.headers.get("connection").lower() == "close"
        assert c.wait_closed(2)


def test_http11_connection_close_honoured(v):
    with RawConn(v.port, timeout=5) as c:
        c.send(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        r = c.read_response()
        assert r.headers.get("connection").lower() == "close"
        assert c.wait_closed(2)


def test_request_header_case_reaches_handler_lowercased_and_many_requests(v):
    """A long keep-alive run: input buffers are given back between requests
    and taken again; every response is right."""
    with RawConn(v.port, timeout=5) as c:
        for i in range(300):
            r = c.request("GET", "/ping", headers={"X-Mixed-Case": "v%d" % i})
            assert (r.status, r.body) == (200, b"pong\n")


def test_refused_body_answer_survives_lingering_close(v):
    """413 for a declared body, sent while the client is still uploading:
    the node reads and drops the rest for a moment before closing, so the
    client gets the answer instead of a reset."""
    import socket as so
    s = so.create_connection(("127.0.0.1", v.port), timeout=10)
    s.sendall(b"POST /ping HTTP/1.1\r\nHost: x\r\nContent-Length: 8000000\r\n\r\n")
    sent = 0
    try:
        while sent < 8000000:
            s.sendall(b"a" * 65536)
            sent += 65536
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    except ConnectionResetError:
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 413 "), data[:100]
