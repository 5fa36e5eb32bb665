"""The WAF example on three nodes linked by a real nats-server (JetStream):
a client that attacks node A is refused by nodes B and C within 50 ms of
A's block, and other clients are unaffected."""

import shutil
import socket
import time

from harness import REPO, wait_for

WAF = REPO / "examples" / "waf"


def get(port, src, path="/"):
    """GET from a chosen loopback source address (each is a distinct client)."""
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: waf.test\r\nConnection: close\r\n\r\n" % path.encode())
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    s.close()
    return int(buf.split(b" ", 2)[1])


def test_attack_on_one_node_is_refused_everywhere_within_50ms(verge, nats_server, tmp_path):
    n = nats_server(jetstream=True)
    nodes = []
    for i in range(3):
        app = tmp_path / ("waf%d" % i)
        shutil.copytree(WAF, app)
        nodes.append(verge(None, apps=[], args=["--app", str(app), "--nats", n.url, "--state-dir",
                                                str(tmp_path / ("state%d" % i))]))
    a, b, c = nodes
    attacker, bystander = "127.0.0.2", "127.0.0.3"
    for v in nodes:
        assert wait_for(lambda: get(v.port, bystander) == 200, 10)
    statuses = []
    for _ in range(45):  # over the threshold within one window, across a window edge too
        statuses.append(get(a.port, attacker))
        if statuses[-1] == 403:
            break
    blocked_at = time.monotonic()  # A answered 403 after JetStream acknowledged the block
    assert statuses[-1] == 403 and statuses.count(200) >= 20, statuses
    seen = {}
    deadline = blocked_at + 2
    while len(seen) < 2 and time.monotonic() < deadline:
        for name, v in (("b", b), ("c", c)):
            if name not in seen and get(v.port, attacker) == 403:
                seen[name] = time.monotonic() - blocked_at
    assert set(seen) == {"b", "c"}, seen
    print("block seen on B after %.1f ms, on C after %.1f ms" % (seen["b"] * 1000, seen["c"] * 1000))
    assert max(seen.values()) < 0.05, seen
    for v in nodes:  # everyone else is unaffected
        assert get(v.port, bystander) == 200
