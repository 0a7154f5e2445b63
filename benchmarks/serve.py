#!/usr/bin/env python
"""``icm serve`` under load and under attack, beside in-process analysis, in one run.

On loopback only, with a fixed number of requests; the server stops by itself
(``--run-for``) even if this script dies.

1. **Files**: the centre and corner 224² crops of the val photos (``icm.data.VAL_PHOTOS``,
   Debian ``opencv-doc``; never trained on), coded with ``dicm-lite0`` at every
   shipped quality.  The reference answer of each file is ``codec.analyze`` in
   this process, rendered as ``icm analyze --json`` renders it.
2. **In process**: every file analysed ``--requests`` times in one loop (what a
   caller of ``icm analyze`` gets without a server): files/s and latency.
3. **Clean load**: ``--requests`` POSTs from ``--clients`` concurrent clients;
   files/s, p50/p99 latency, and answers lost, duplicated or wrong.
4. **Hostile load**: the same, with 10% of the bodies malformed or hostile
   (garbage, truncated, a header declaring 268 Mpx, an unserved model, a body
   over ``--max-body``), clients that disconnect half-way through their body,
   and one slow client that sends its body a few bytes at a time.  Every good
   request must get one answer, the right one (HTTP gives one response per
   request: lost = no 200, wrong = another answer), every bad one its status.

Prints a Markdown report (``--out`` writes it too); exit 1 if any check fails.

Usage::

    python benchmarks/serve.py [--requests 2000] [--clients 32] [--workers 2] [--out docs/results/serve-benchmark.md]
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_files() -> list[tuple[bytes, dict]]:
    """``(file, reference answer)`` for every val-photo crop at every shipped quality."""
    import torch

    from icm import codec
    from icm.data import VAL_PHOTOS, five_crops, load_photo, to_tensor
    from icm.models import has_weights, model_info
    from icm.serve.service import Service

    svc = Service({"dicm-lite0": shipped_lite0()})
    out = []
    with torch.no_grad():
        for s in VAL_PHOTOS:
            for crop in five_crops(load_photo(s)):
                for q in svc.models["dicm-lite0"]:
                    data = codec.encode(codec.get_model("dicm-lite0", q), to_tensor(crop)[None])[0]
                    out.append((data, svc.run([svc.admit(data)])[0]))
    return out


def post(port: int, body: bytes, timeout: float = 120.0) -> tuple[int, bytes, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/v1/analyze", body=body, headers={"Content-Type": "application/octet-stream"})
        r = conn.getresponse()
        return r.status, r.read(), time.perf_counter() - t
    finally:
        conn.close()


def disconnect_midway(port: int, body: bytes) -> str:
    """Send the headers and half the body, then hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                  + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
    return "disconnected"


def slow_client(port: int, body: bytes, chunk: int = 64, pause: float = 0.05) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(b"POST /v1/analyze HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/octet-stream\r\n" + f"Content-Length: {len(body)}\r\n\r\n".encode())
        for i in range(0, len(body), chunk):
            s.sendall(body[i : i + chunk])
            time.sleep(pause)
        raw = b""
        while part := s.recv(65536):
            raw += part
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


def hostile_bodies(good: bytes, max_body: int) -> list[tuple[str, bytes, int]]:
    from icm import bitstream
    from icm.bitstream import Header
    from icm.models import model_info

    lite = model_info("dicm-lite0").model_id
    return [("garbage", os.urandom(200), 400), ("truncated", good[: len(good) // 2], 400),
            ("268 Mpx declared", bitstream.pack(Header(lite, 1, 4096, 65536), [bytes(16)]), 413),
            ("unserved model", bitstream.pack(Header(1, 1, 64, 64), [bytes(4), bytes(4)]), 422),
            ("over --max-body", bytes(max_body + 1), 413)]


def load(port: int, files, requests: int, clients: int, hostile: bool, max_body: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    plan = []
    for i in range(requests):
        if hostile and rng.random() < 0.10:
            name, body, status = rng.choice(hostile_bodies(files[0][0], max_body))
            plan.append(("bad", name, body, status))
        elif hostile and rng.random() < 0.02:
            plan.append(("drop", "disconnects midway", files[i % len(files)][0], None))
        else:
            plan.append(("good", i % len(files), files[i % len(files)][0], files[i % len(files)][1]))
    got = {"answered": 0, "lost": 0, "wrong": 0, "bad_ok": 0, "bad_wrong": [], "latency": []}
    lock = threading.Lock()

    def run(item):
        kind, key, body, want = item
        if kind == "drop":
            return disconnect_midway(port, body)
        try:
            status, raw, dt = post(port, body)
        except OSError:
            with lock:
                got["lost" if kind == "good" else "bad_wrong"] += 1 if kind == "good" else [(key, "no answer")]
            return None
        with lock:
            if kind == "good":
                got["latency"].append(dt)
                if status != 200:
                    got["lost"] += 1
                elif json.loads(raw) != want:
                    got["wrong"] += 1
                    got.setdefault("first_wrong", (json.loads(raw), want))
                else:
                    got["answered"] += 1
            elif status == want and list(json.loads(raw)) == ["error"]:
                got["bad_ok"] += 1
            else:
                got["bad_wrong"].append((key, status))
        return None

    slow = None
    if hostile:
        slow_result = {}
        slow = threading.Thread(target=lambda: slow_result.update(r=slow_client(port, files[1][0])))
        slow.start()
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, plan))
    wall = time.perf_counter() - t
    if slow is not None:
        slow.join(timeout=300)
        status, payload = slow_result.get("r", (0, b""))
        ok = status == 200 and json.loads(payload) == files[1][1]
        got["slow_client"] = "answered correctly" if ok else f"FAILED ({status})"
    good = sum(1 for p in plan if p[0] == "good")
    got.update(good=good, bad=sum(1 for p in plan if p[0] == "bad"), drops=sum(1 for p in plan if p[0] == "drop"),
               wall=wall, files_per_s=good / wall)
    return got


def shipped_lite0() -> tuple[int, ...]:
    """The shipped qualities of dicm-lite0 (what the service serves by default)."""
    from icm.models import has_weights, model_info

    return tuple(q for q in model_info("dicm-lite0").qualities if has_weights("dicm-lite0", q))


def in_process(files, requests: int) -> dict:
    from icm import codec
    from icm.serve.service import Service

    svc = Service({"dicm-lite0": shipped_lite0()})
    lat = []
    t = time.perf_counter()
    for i in range(requests):
        data, _ = files[i % len(files)]
        t0 = time.perf_counter()
        res = codec.analyze(data)
        svc._classes(svc.admit(data), res["model"], res["output"][0])  # rendered, as a server renders it
        lat.append(time.perf_counter() - t0)
    wall = time.perf_counter() - t
    return {"files_per_s": requests / wall, "latency": lat, "wall": wall}


def pct(values, q) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-body", type=int, default=200_000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    import torch

    from icm import threads

    # The reference answers at one thread, as each worker runs (logits are bit-exact only
    # at the same thread count: docs/design.md); the in-process baseline at icm's policy.
    torch.set_num_threads(1)
    files = make_files()
    base_threads = threads.apply()
    base = in_process(files, args.requests)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "icm.cli", "serve", "--port", str(port), "--models",
                               "dicm-lite0", "--workers", str(args.workers), "--max-body", str(args.max_body),
                               "--max-queue", str(4 * args.clients), "--run-for", "1800"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("icm serve did not come up")
            time.sleep(0.5)
        clean = load(port, files, args.requests, args.clients, hostile=False, max_body=args.max_body)
        hostile = load(port, files, args.requests, args.clients, hostile=True, max_body=args.max_body, seed=1)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()

    rows = [(f"in-process `codec.analyze` (one loop, {base_threads} thread(s))", base["files_per_s"], base["latency"],
             "—", "—", "—"),
            (f"`icm serve`, {args.clients} clients, {args.workers} workers at 1 thread", clean["files_per_s"], clean["latency"], clean["wrong"],
             clean["lost"], clean["answered"]),
            (f"`icm serve`, {args.clients} clients, hostile mix", hostile["files_per_s"], hostile["latency"],
             hostile["wrong"], hostile["lost"], hostile["answered"])]
    lines = ["# `icm serve` under load", "",
             f"`python benchmarks/serve.py --requests {args.requests} --clients {args.clients} --workers "
             f"{args.workers}`, {datetime.date.today().isoformat()}, {platform.platform()}, "
             f"{os.cpu_count()} CPUs, loopback. {len(files)} `dicm-lite0` files (the 20 crops of the four val "
             "photos at every shipped quality), classify. Latency: per request, client side; medians and "
             "99th percentiles in ms.", "",
             "| run | files/s | p50 ms | p99 ms | wrong | lost | answered right |", "|---|---|---|---|---|---|---|"]
    for name, fps, lat, wrong, lost, right in rows:
        lines.append(f"| {name} | {fps:.1f} | {1000 * statistics.median(lat):.1f} | {1000 * pct(lat, 0.99):.1f} "
                     f"| {wrong} | {lost} | {right} |")
    lines += ["", f"Server / in-process throughput: {clean['files_per_s'] / base['files_per_s']:.2f}× "
              f"({args.workers} worker(s)).", "",
              f"Hostile mix: {hostile['good']} good requests, {hostile['bad']} malformed or hostile bodies "
              f"({hostile['bad_ok']} answered with their status and a one-line error, "
              f"{len(hostile['bad_wrong'])} otherwise), {hostile['drops']} clients that hung up mid-body, "
              f"one slow client ({hostile.get('slow_client')})."]
    text = "\n".join(lines) + "\n"
    for run in (clean, hostile):
        if "first_wrong" in run:
            print("first wrong answer:", json.dumps(run["first_wrong"][0]), "\nexpected:", json.dumps(run["first_wrong"][1]))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    ok = (clean["lost"] == clean["wrong"] == 0 and hostile["lost"] == hostile["wrong"] == 0
          and clean["answered"] == clean["good"] and hostile["answered"] == hostile["good"]
          and not hostile["bad_wrong"] and hostile.get("slow_client") == "answered correctly")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
