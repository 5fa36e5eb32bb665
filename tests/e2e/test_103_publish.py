"""verge.publish: Lua handlers publish on the app's own subjects
(verge.app.APP.<subject>) over the node's bus; a plain NATS client
subscribed to the app's subjects receives them (API extensibility)."""

import socket
import time

from harness import wait_for

APP = """\
name: pub
routes:
  - exact: /order
    handler: edge.lua:order
  - exact: /bad
    handler: edge.lua:bad
"""
EDGE = """\
function order(req)
  local ok, err = verge.publish("orders.created", req.query.id or "none")
  return {body = tostring(ok) .. " " .. tostring(err) .. "\\n"}
end
function bad(req)
  local ok, err = pcall(verge.publish, req.query.s, "x")
  return {body = tostring(ok) .. " " .. tostring(err) .. "\\n"}
end
"""


class Sub:
    """A plain NATS client subscribed to one subject (the protocol by hand)."""

    def __init__(self, port, subject):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.s.recv(4096)  # INFO
        self.s.sendall(b'CONNECT {"verbose":false}\r\nSUB %s 1\r\nPING\r\n' % subject.encode())
        self.buf = b""
        while b"PONG" not in self.buf:
            self.buf += self.s.recv(4096)
        self.buf = self.buf.split(b"PONG\r\n", 1)[1]

    def next(self, timeout=5):
        """(subject, payload) of the next MSG."""
        deadline = time.monotonic() + timeout
        while True:
            if b"\r\n" in self.buf:
                line, rest = self.buf.split(b"\r\n", 1)
                if line.startswith(b"MSG "):
                    parts = line.split()
                    n = int(parts[-1])
                    while len(rest) < n + 2:
                        rest += self.s.recv(4096)
                    self.buf = rest[n + 2:]
                    return parts[1].decode(), rest[:n]
                if line == b"PING":
                    self.s.sendall(b"PONG\r\n")
                self.buf = rest
                continue
            self.s.settimeout(max(0.01, deadline - time.monotonic()))
            self.buf += self.s.recv(4096)


def test_lua_publish_reaches_a_plain_nats_subscriber(verge, nats_server):
    n = nats_server()
    v = verge(APP, {"edge.lua": EDGE}, args=["--nats", n.url])
    sub = Sub(n.port, "verge.app.pub.>")
    r = v.get("/order?id=42")
    assert r.status == 200 and r.body == b"true nil\n", r.body
    subject, payload = sub.next()
    assert subject == "verge.app.pub.orders.created" and payload == b"42"


def test_publish_refuses_subjects_outside_the_grammar(verge):
    v = verge(APP, {"edge.lua": EDGE})  # the in-process bus: publishing works without NATS
    assert v.get("/order?id=1").body == b"true nil\n"
    for bad in ("a..b", "a.*", "a.>", "a%20b", ".a"):
        body = v.get("/bad?s=" + bad).body
        assert body.startswith(b"false") and b"invalid subject" in body, (bad, body)
