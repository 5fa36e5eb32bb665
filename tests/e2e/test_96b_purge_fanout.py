"""Cache purges fan out to every node over the bus (a real nats-server the
test starts): a purge on one node empties the others' caches too; bus
messages that are malformed or reach outside their app are refused and
counted, and the node keeps serving."""

import json
import time

from harness import metric_sum, wait_for
from test_96_cache import ADMIN, HOST, assert_stored, cc, get, manifest, purge, st


def two_nodes(verge, scripted_origin, nats_server):
    n = nats_server()
    o = scripted_origin()
    o.script("/a", headers=cc("max-age=600"), body=b"A")
    o.script("/b", headers=cc("max-age=600", **{"Surrogate-Key": "k1"}), body=b"B")
    a = verge(manifest(o), args=ADMIN + ["--nats", n.url])
    b = verge(manifest(o), args=ADMIN + ["--nats", n.url])
    for v in (a, b):
        for p in ("/a", "/b"):
            assert_stored(get(v, p))
            assert st(get(v, p)).get("hit") is True
    return n, o, a, b


def is_hit(v, path):
    return st(get(v, path)).get("hit") is True


def test_purge_on_one_node_reaches_the_others(verge, scripted_origin, nats_server):
    n, o, a, b = two_nodes(verge, scripted_origin, nats_server)
    r = purge(a, {"url": "http://%s/a" % HOST})
    assert r.status == 200 and r.json() == {"purged": 1, "sent": True}
    assert not is_hit(a, "/a")
    t0 = time.monotonic()
    assert wait_for(lambda: not st(get(b, "/a")).get("hit"), 2)
    print("purge seen on the other node after %.1f ms" % ((time.monotonic() - t0) * 1000))
    assert is_hit(b, "/b")  # only what was purged
    r = purge(b, {"tag": "k1"})
    assert r.json()["purged"] == 1
    assert wait_for(lambda: not st(get(a, "/b")).get("hit"), 2)
    assert metric_sum(a.metrics(), "verge_purges_received_total", result="applied") >= 1


def test_bus_purges_outside_the_app_or_malformed_are_refused(verge, scripted_origin, nats_server):
    n, o, a, b = two_nodes(verge, scripted_origin, nats_server)
    bad = [
        b"not json",
        json.dumps({"node": "x", "purges": []}).encode(),
        json.dumps({"node": "x", "purges": [{"kind": "url", "value": "other %s\n/a" % HOST}]}).encode(),
        json.dumps({"node": "x", "purges": [{"kind": "nuke", "value": "c %s\n/a" % HOST}]}).encode(),
        json.dumps({"node": "x", "purges": [{"kind": "tag", "value": "c k1"}]}).encode(),
    ]
    for payload in bad:
        n.publish("verge.purge.c", payload)
    assert wait_for(lambda: metric_sum(a.metrics(), "verge_purges_received_total", result="refused") >= len(bad), 3)
    assert is_hit(a, "/a") and is_hit(b, "/b")  # nothing was purged
    # a plain NATS client may purge with a well-formed message (API extensibility)
    n.publish("verge.purge.c", json.dumps({"node": "ops", "purges": [{"kind": "url", "value": "c %s\n/a" % HOST}]})
              .encode())
    assert wait_for(lambda: not is_hit(a, "/a") and not is_hit(b, "/a"), 2)
    assert a.alive() and b.alive()


def test_without_nats_a_purge_stays_local(verge, scripted_origin):
    o = scripted_origin()
    o.script("/a", headers=cc("max-age=600"), body=b"A")
    v = verge(manifest(o), args=ADMIN)
    assert_stored(get(v, "/a"))
    r = purge(v, {"url": "http://%s/a" % HOST})
    assert r.json() == {"purged": 1, "sent": True}  # the in-process bus takes it: nobody else listens
