#!/usr/bin/env python3
"""Memory per idle keep-alive connection.

Opens COUNT connections to 127.0.0.1:PORT, sends one keep-alive GET on each
and reads the whole response, then holds them all idle and measures the
server's RSS (sum of VmRSS over the process tree rooted at --pid) before vs
while holding. Prints one JSON object:

  {"wanted", "held", "failed", "closed_by_server", "rss_before_kib",
   "rss_holding_kib", "kib_per_conn", "open_seconds"}

Only the standard library; bounded by --timeout. Kernel socket buffers are not
in RSS, so this is the server's own per-connection state (buffers, structs).
"""
import argparse
import asyncio
import json
import os
import resource
import socket
import sys
import time


def tree_pids(root):
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        # comm may contain spaces and ")": ppid is the 2nd field after the last ")"
        parent[int(d)] = int(st[st.rindex(")") + 2:].split()[1])
    keep, changed = {root}, True
    while changed:
        changed = False
        for p, pp in parent.items():
            if p not in keep and pp in keep:
                keep.add(p)
                changed = True
    return keep


def rss_kib(root):
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def response_complete(buf):
    """True when buf holds one whole HTTP/1.1 response."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].lower()
    body = buf[end + 4:]
    for line in head.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
        if line.startswith(b"transfer-encoding:") and b"chunked" in line:
            return body.endswith(b"0\r\n\r\n")
    return True  # no body framing: e.g. 204/304


async def open_one(loop, host, port, request, sem, socks):
    async with sem:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await loop.sock_connect(s, (host, port))
            await loop.sock_sendall(s, request)
            buf = b""
            while not response_complete(buf):
                chunk = await loop.sock_recv(s, 65536)
                if not chunk or len(buf) > 1 << 20:
                    raise ConnectionError("closed before a full response")
                buf += chunk
            if not buf.startswith(b"HTTP/1.1 2"):
                raise ConnectionError(buf[:40])
            socks.append(s)
            return True
        except (OSError, ConnectionError):
            s.close()
            return False


async def run(args):
    loop = asyncio.get_running_loop()
    request = (f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               f"Connection: keep-alive\r\n\r\n").encode()
    sem = asyncio.Semaphore(args.concurrency)
    socks = []
    rss_before = rss_kib(args.pid)
    t0 = time.monotonic()
    results = await asyncio.wait_for(
        asyncio.gather(*(open_one(loop, "127.0.0.1", args.port, request, sem, socks)
                         for _ in range(args.count))),
        timeout=args.timeout)
    opened = time.monotonic() - t0
    await asyncio.sleep(args.hold)
    rss_holding = rss_kib(args.pid)
    closed = 0
    for s in socks:
        try:
            if s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    held = len(socks) - closed
    for s in socks:
        s.close()
    return {
        "wanted": args.count,
        "held": held,
        "failed": results.count(False),
        "closed_by_server": closed,
        "rss_before_kib": rss_before,
        "rss_holding_kib": rss_holding,
        "kib_per_conn": (rss_holding - rss_before) / held if held else 0.0,
        "open_seconds": round(opened, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="server's root pid (RSS of its tree)")
    ap.add_argument("--path", default="/hello")
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200, help="connects in flight")
    ap.add_argument("--hold", type=float, default=2.0, help="seconds idle before measuring")
    ap.add_argument("--timeout", type=float, default=60.0, help="bound on opening them all")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.count + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            print(f"idle_conns: RLIMIT_NOFILE hard limit {hard} < {need}", file=sys.stderr)
            return 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
