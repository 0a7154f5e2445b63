"""``python -m icm.fuzz http --seconds S``: a bounded fuzz of ``icm serve`` over loopback.

It starts the real server (``icm serve`` on ``127.0.0.1`` and a free port, with
``--run-for`` as a backstop so it always stops by itself), then sends requests from
raw sockets of the standard library, one at a time, until ``S`` seconds or
``requests`` have passed:

* ``.icm`` bodies mutated by :func:`icm.fuzz.mutate.mutate_icm` (valid header and CRC,
  mutated sections), random bodies, and valid files;
* random query strings (``task``, ``top``, ``score_thresh``: junk, repeats, escapes),
  headers (``Content-Type``, ``Authorization``, ``Expect``, lying or doubled
  ``Content-Length``, chunked bodies, long and non-ASCII values), methods and paths;
* slow uploads (a body in small pieces, pauses between them), aborted uploads (the
  connection closed mid-body or mid-header), and bytes that are not HTTP.

What it checks: every answer's status is one of the API's (``docs/serving.md``:
200, 400, 401, 404, 405, 413, 422, 503, 504; a 500 is a finding, as is no answer to
a whole request or an answer later than the server's own ``--timeout``); every error
of ours is one JSON line ``{"error": ...}``; a 200 of ``/v1/analyze`` is JSON without
NaN; every ``check_every`` requests and at the end the server is up (``/health``)
and answers a valid file exactly as it did before the fuzzing; ``/metrics`` counts
no 500; the server stops cleanly.  A finding's raw request is kept as
``<out>/http-finding-<sha1>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .mutate import mutate_icm

STATUSES = frozenset({200, 400, 401, 404, 405, 413, 422, 503, 504})
"""The statuses of ``docs/serving.md``'s API (500 is left out on purpose: a finding)."""
MAX_BODY = 200_000
SERVER_TIMEOUT = 10.0  # the server's --timeout: no answer may take longer (plus a margin)
PATHS = ("/v1/analyze", "/v1/decompress", "/health", "/v1/models", "/metrics", "/_icm/work", "/_icm/health",
         "/docs", "/v1/analyze/", "//v1/analyze", "/v1/%61nalyze", "/%00", "/../../etc/passwd", "/" + "a" * 3000)
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FOO", "post")
TASKS = ("classify", "detect", "segment", "", "fly", "CLASSIFY", "classify\x00", "%FF", "détect")
NUMBERS = ("1", "5", "100", "0", "101", "-3", "1e3", "nan", "inf", "0.5", "0x10", "", "many", "9" * 5000, "٣")


class HttpFinding(AssertionError):
    pass


@dataclass
class Request:
    raw: bytes  # what goes on the wire
    kind: str
    whole: bool = True  # a complete, well-formed request: it must be answered
    slow: bool = False
    head: bool = False  # a HEAD request: its answer has no body
    abort_after: int | None = None  # close the connection after this many bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_bytes(method: str, target: str, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
               length: bool = True, token: str | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    if length:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers or ()]
    return "\r\n".join(lines).encode("latin-1", "replace") + b"\r\n\r\n" + body


def read_answer(sock: socket.socket, deadline: float, head: bool = False) -> tuple[int | None, dict, bytes]:
    """``(status, headers, body)`` of the first final answer; ``(None, {}, b"")`` if the
    connection closed without one."""
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise HttpFinding("no answer within the server's time limit") from None
            except ConnectionError:
                chunk = b""
            if not chunk:
                return None, {}, b""
            buf += chunk
        top, _, buf = buf.partition(b"\r\n\r\n")
        lines = top.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        if 100 <= status < 200:
            continue  # 100 Continue: the final answer follows
        size = int(headers["content-length"]) if headers.get("content-length", "").isdigit() else None
        if head:
            return status, headers, b""
        while size is None or len(buf) < size:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise HttpFinding("an answer's body did not arrive within the time limit") from None
            except ConnectionError:
                chunk = b""
            if not chunk:
                break
            buf += chunk
        return status, headers, buf[:size] if size is not None else buf


def send(port: int, req: Request, rng: random.Random) -> tuple[int | None, dict, bytes]:
    deadline = time.monotonic() + SERVER_TIMEOUT + 20
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            if req.abort_after is not None:
                sock.sendall(req.raw[: req.abort_after])
                time.sleep(rng.uniform(0, 0.05))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
                return None, {}, b""
            if req.slow:
                pieces = rng.randint(3, 12)
                step = max(len(req.raw) // pieces, 1)
                for i in range(0, len(req.raw), step):
                    sock.sendall(req.raw[i : i + step])
                    time.sleep(rng.uniform(0.01, 0.12))
            else:
                sock.sendall(req.raw)
            if not req.whole:
                sock.shutdown(socket.SHUT_WR)  # no more bytes: the server answers what it has
        except OSError:
            pass  # the server may refuse and close before the body is all sent (413): its answer is read below
        return read_answer(sock, deadline, req.head)


class Generator:
    """Random requests from ``seeds`` (valid ``.icm`` files the server serves)."""

    def __init__(self, seeds: list[bytes], rng: random.Random, token: str):
        self.seeds, self.rng, self.token = seeds, rng, token

    def http(self, method: str, target: str, body: bytes = b"", headers=None, length: bool = True) -> bytes:
        """A request that carries the bearer token nine times in ten (401 otherwise)."""
        token = self.token if self.rng.random() < 0.9 else None
        return http_bytes(method, target, body, headers, length, token)

    def body(self) -> bytes:
        r, s = self.rng.random(), self.rng.choice(self.seeds)
        if r < 0.6:
            return mutate_icm(s, 4096, self.rng.randrange(1 << 30))
        if r < 0.8:
            return s
        return self.rng.randbytes(self.rng.choice((0, 1, 3, 16, 300, 5000)))

    def query(self) -> str:
        rng = self.rng
        if rng.random() < 0.3:
            return ""
        pairs = [(rng.choice(("task", "top", "score_thresh", "x", "task[]", "")),
                  rng.choice(TASKS + NUMBERS)) for _ in range(rng.randint(1, 4))]
        q = urllib.parse.urlencode(pairs)
        if rng.random() < 0.2:
            q = rng.choice((q + "&&=", "%", "task=%ZZ", q.replace("=", "%3D"), ";" + q, "a=" + "b" * 4000))
        return "?" + q

    def next(self) -> Request:
        rng = self.rng
        op = rng.choice(("/v1/analyze", "/v1/analyze", "/v1/decompress"))
        k = rng.choices(("body", "query", "headers", "route", "slow", "abort", "chunked", "big", "garbage"),
                        weights=(35, 10, 15, 10, 4, 10, 6, 2, 8))[0]
        if k == "body":
            return Request(self.http("POST", op, self.body()), k)
        if k == "query":
            return Request(self.http("POST", op + self.query(), rng.choice(self.seeds)), k)
        if k == "headers":
            return self._headers(op)
        if k == "route":
            method, path = rng.choice(METHODS), rng.choice(PATHS)
            body = self.body() if rng.random() < 0.5 else b""
            return Request(self.http(method, path + self.query(), body), k, head=method == "HEAD")
        if k == "slow":
            return Request(self.http("POST", op + self.query(), self.body()), k, slow=True)
        if k == "abort":
            raw = self.http("POST", op, self.body() or b"x")
            return Request(raw, k, whole=False, abort_after=rng.randrange(len(raw)))
        if k == "big":  # past --max-body, declared or not
            body = rng.choice(self.seeds) + rng.randbytes(MAX_BODY + rng.randint(1, 1000))
            # not "whole": a server that answers 413 early and closes may have its answer lost to
            # the TCP reset of the bytes still coming (the kernel's doing, not the server's)
            if rng.random() < 0.5:
                return Request(self.http("POST", op, body), k, whole=False)
            pieces = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536])
                              for i in range(0, len(body), 65536))
            return Request(self.http("POST", op, pieces + b"0\r\n\r\n", [("Transfer-Encoding", "chunked")], False), k,
                           whole=False)
        if k == "chunked":
            body = self.body()
            pieces = [body[i : i + 37] for i in range(0, len(body), 37)]
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
            broken = rng.random() < 0.4
            if broken:
                chunks = rng.choice((chunks[:-7], b"zz\r\n" + chunks, chunks.replace(b"\r\n", b"\n", 1),
                                     b"ffffffffffffffff\r\n" + body))
            raw = self.http("POST", op, chunks, [("Transfer-Encoding", "chunked")], length=False)
            return Request(raw, k, whole=not broken)
        raw = rng.choice((rng.randbytes(rng.randint(1, 200)), b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n",
                          b"POST /v1/analyze HTTP/1.1\r\nContent-Length: 5\r\n",
                          b"GET /health HTTP/1.1\nHost: x\n\n", b"POST /v1/analyze HTTP/1.0\r\n\r\n",
                          b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X: y\r\n" * 300 + b"\r\n"))
        return Request(raw, "garbage", whole=False)

    def _headers(self, op: str) -> Request:
        rng = self.rng
        body = self.body()
        extra = []
        for _ in range(rng.randint(1, 4)):
            extra.append(rng.choice((
                ("Content-Type", rng.choice(("application/octet-stream", "application/json", "text/plain; charset=é",
                                             "multipart/form-data; boundary=x", "\x7f"))),
                ("Authorization", rng.choice(("Bearer", "Bearer x", "Basic Zm9vOmJhcg==", "bearer " + "t" * 600))),
                ("Expect", "100-continue"),
                ("Accept", "*/*"), ("X-Long", "v" * rng.choice((100, 8000, 20000))),
                ("Transfer-Encoding", rng.choice(("identity", "gzip"))),
                ("Content-Encoding", "gzip"), ("X-Bytes", "\xe9\xff\x80"),
            )))
        lie = rng.random()
        if lie < 0.25:  # a length past the body: the server waits for more, then we leave
            raw = self.http("POST", op, body, extra, length=False)
            raw = raw.replace(b"\r\n\r\n", b"\r\nContent-Length: %d\r\n\r\n" % (len(body) + rng.randint(1, 100)), 1)
            return Request(raw, "headers", whole=False, abort_after=len(raw))
        if lie < 0.4:  # doubled or junk lengths
            value = rng.choice((f"{len(body)}, {len(body)}", "-1", "1e3", "\xb2", "99999999999999999999", " 0"))
            raw = self.http("POST", op, body, extra + [("Content-Length", value)], length=False)
            return Request(raw, "headers", whole=False)
        return Request(self.http("POST", op, body, extra), "headers")


class Server:
    """``icm serve`` on a free loopback port, stopped by :meth:`stop` or by itself (``--run-for``)."""

    def __init__(self, models: str, run_for: float, log_path: Path, token: str):
        self.port, self.token = free_port(), token
        token_file = log_path.with_name("http-token")
        token_file.write_text(token + "\n")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        self.log = open(log_path, "w")  # noqa: SIM115  (held while the server runs, closed by stop())
        self.proc = subprocess.Popen([sys.executable, "-m", "icm.cli", "serve", "--host", "127.0.0.1", "--port",
                                      str(self.port), "--models", models, "--max-body", str(MAX_BODY),
                                      "--timeout", str(SERVER_TIMEOUT), "--run-for", str(run_for),
                                      "--token-file", str(token_file)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait(self, log_path: Path) -> None:
        """Until ``/health`` answers 200 (the models loaded)."""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"icm serve exited while starting: {log_path.read_text()[-2000:]}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("icm serve did not become healthy in 180 s")

    def get(self, path: str):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(http_bytes("GET", path, token=self.token))
            return read_answer(s, time.monotonic() + 30)

    def post(self, path: str, body: bytes):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(http_bytes("POST", path, body, [("Content-Type", "application/octet-stream")], token=self.token))
            return read_answer(s, time.monotonic() + 60)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


def served() -> dict[str, int]:
    """What the fuzzed server serves: each shipped family at its lowest shipped quality."""
    from ..models import has_weights, model_info
    from .decoders import shipped_families

    return {f: next(q for q in model_info(f).qualities if has_weights(f, q)) for f in shipped_families()}


def served_seeds(models: dict[str, int]) -> list[bytes]:
    """Valid files of what is served: coded from the bundled samples, and the golden files."""
    from .decoders import coded, golden

    return [s for f, q in models.items() for s in (*coded(f, q), *(g for g in golden(f) if _quality(g) == q))]


def _quality(data: bytes) -> int:
    from .. import preflight

    return preflight.parse(data).header.quality


def _check(req: Request, status, headers, body) -> None:
    if status is None:
        if req.whole and req.abort_after is None:
            raise HttpFinding("the connection closed without an answer to a whole request")
        return
    if status not in STATUSES:
        raise HttpFinding(f"status {status} is outside the API's statuses: {body[:200]!r}")
    if req.head or headers.get("content-type") != "application/json":
        return

    def no_nan(c):
        raise HttpFinding(f"{c} in a JSON answer")

    try:
        obj = json.loads(body, parse_constant=no_nan)
    except ValueError:
        raise HttpFinding(f"a JSON answer that is not JSON: {body[:200]!r}") from None
    if status != 200 and (not isinstance(obj, dict) or list(obj) != ["error"] or "\n" in obj["error"]):
        raise HttpFinding(f"an error body that is not one JSON line: {body[:200]!r}")


def fuzz(seconds: float = 30.0, requests: int | None = None, out: str | os.PathLike = "fuzz-corpus",
         seed: int | None = None, check_every: int = 50, log=print) -> dict:
    """Fuzz a fresh ``icm serve`` for ``seconds`` (or ``requests``); returns
    ``{"requests", "seconds", "statuses", "findings"}`` (findings: the kept files)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    models = served()
    rng = random.Random(seed)
    token = f"{rng.getrandbits(128):032x}"
    t_start = time.monotonic()
    log_path = out / "http-server.log"
    server = Server(",".join(f"{f}:{q}" for f, q in models.items()), run_for=seconds + 240, log_path=log_path,
                    token=token)
    try:
        seeds = served_seeds(models)  # while the server loads its models
        server.wait(log_path)
    except BaseException:
        server.stop()
        raise
    gen = Generator(seeds, rng, token)
    started = time.monotonic() - t_start
    statuses: dict[int | None, int] = {}
    findings: list[str] = []
    n = 0
    try:
        valid = seeds[0]
        baseline = server.post("/v1/analyze", valid)
        if baseline[0] != 200:
            raise RuntimeError(f"the server does not answer a valid file: {baseline[0]} {baseline[2][:200]!r}")
        t0 = time.monotonic()

        def alive(req: Request | None):
            if server.proc.poll() is not None:
                raise HttpFinding("the server exited")
            if server.get("/health")[0] != 200:
                raise HttpFinding("the server is no longer healthy")
            if server.post("/v1/analyze", valid)[2] != baseline[2]:
                raise HttpFinding("the server answers a valid file differently than before")

        while time.monotonic() - t0 < seconds and (requests is None or n < requests):
            req = gen.next()
            n += 1
            try:
                status, headers, body = send(server.port, req, rng)
                statuses[status] = statuses.get(status, 0) + 1
                _check(req, status, headers, body)
                if n % check_every == 0:
                    alive(req)
            except (HttpFinding, OSError) as e:
                name = out / f"http-finding-{hashlib.sha1(req.raw).hexdigest()[:12]}"
                name.write_bytes(req.raw)
                findings.append(str(name))
                log(f"http: FINDING ({req.kind}): {e}; request kept as {name}")
                if server.proc.poll() is not None:
                    break
        try:
            alive(None)
            _, _, metrics = server.get("/metrics")
            if b'status="500"' in metrics:
                raise HttpFinding("/metrics counts answers of 500")
        except (HttpFinding, OSError) as e:
            findings.append(f"after the fuzzing: {e}")
            log(f"http: FINDING after the fuzzing: {e}")
        spent = time.monotonic() - t0
    finally:
        code = server.stop()
    stopped = "icm serve: stopped" in (out / "http-server.log").read_text()
    if code != 0 or not stopped:
        findings.append(f"the server did not stop cleanly (exit {code})")
    return {"requests": n, "seconds": spent, "start_seconds": started, "statuses": statuses, "findings": findings}
