"""``icm serve`` for real: started on a loopback port, loaded by bounded clients, fed
bad input, and stopped (``--run-for`` stops it by itself if a test does not).

Every answer is compared with what ``icm analyze --json`` / ``icm decompress`` give
for the same file in this process."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import torch

from icm import bitstream, codec
from icm.bitstream import Header
from icm.models import model_info

from conftest import _subprocess_env, shipped_qualities

pytest.importorskip("litserve")

GOLDEN = Path(__file__).with_name("golden")
FILES = {"dicm-lite0": GOLDEN / "dicm-lite0-q1.icm", "bai2022-fmnist": GOLDEN / "bai2022-fmnist-q9.icm",
         "hyperprior": GOLDEN / "hyperprior-q1.icm"}
MODELS = "dicm-lite0:1,bai2022-fmnist:9,hyperprior:1"

pytestmark = pytest.mark.skipif(not all(shipped_qualities(n) for n in FILES), reason="needs the shipped weights")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *args: str, run_for: float = 600):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = _subprocess_env()
        env["OMP_NUM_THREADS"] = "1"
        self.proc = subprocess.Popen([sys.executable, "-m", "icm.cli", "serve", "--port", str(self.port),
                                      "--run-for", str(run_for), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"icm serve exited: {self.proc.stdout.read()}")
            try:
                if self.get("/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError("icm serve did not become healthy in 120 s")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:  # EOF only once no process of the server holds its output open
            return self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            raise AssertionError("a process of icm serve outlived it (its output stayed open)") from None


@pytest.fixture(scope="module")
def server():
    s = Server("--models", MODELS, "--max-body", "200000")
    yield s
    out = s.stop()
    assert "icm serve: stopped" in out, out


def _expected(run_cli, path: Path, *args) -> dict:
    r = run_cli("analyze", path, "--json", *args)
    assert r.code == 0, r.err
    row = json.loads(r.out)
    row.pop("file")
    return row


def _peak_kb(pid: int) -> int:
    """Peak resident memory (VmHWM, kB) of a process and its children, summed."""
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            status = (d / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if d.name == str(pid) or fields.get("PPid", "").strip() == str(pid):
            total += int(fields.get("VmHWM", "0 kB").split()[0])
    return total


def _error(status_body) -> str:
    status, headers, body = status_body
    obj = json.loads(body)
    assert list(obj) == ["error"] and "\n" not in obj["error"], obj
    assert str(GOLDEN) not in obj["error"]  # no path echoed
    return obj["error"]


def test_health_and_models(server, run_cli):
    status, _, body = server.get("/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    status, _, body = server.get("/v1/models")
    rows = {r["name"]: r for r in json.loads(body)["models"]}
    assert set(rows) == set(FILES)
    r = run_cli("models", "--json")
    local = {d["name"]: d for d in map(json.loads, r.out.strip().splitlines())}
    for name, row in rows.items():
        assert {k: v for k, v in row.items() if k != "weights"} == {k: v for k, v in local[name].items()
                                                                      if k != "weights"}
    assert rows["dicm-lite0"]["weights"] == [1] and rows["bai2022-fmnist"]["weights"] == [9]


@pytest.mark.parametrize("name,task,query", [("dicm-lite0", "classify", "?top=3"), ("dicm-lite0", "segment",
                                             "?task=segment&score_thresh=0.05"), ("bai2022-fmnist", None, "")])
def test_answers_equal_icm_analyze(server, run_cli, name, task, query):
    path = FILES[name]
    status, headers, body = server.post("/v1/analyze" + query, path.read_bytes(),
                                        headers={"Content-Type": "application/octet-stream"})
    assert status == 200, body
    args = (["--top", "3"] if "top=3" in query else []) + (["--task", task, "--score-thresh", "0.05"]
                                                             if task == "segment" else [])
    assert json.loads(body) == _expected(run_cli, path, *args)


def test_decompress_equals_icm_decompress(server, run_cli, tmp_path):
    status, headers, body = server.post("/v1/decompress", FILES["hyperprior"].read_bytes())
    assert status == 200 and headers["content-type"] == "image/png"
    (tmp_path / "h.icm").write_bytes(FILES["hyperprior"].read_bytes())
    assert run_cli("decompress", tmp_path / "h.icm").code == 0
    ours = np.asarray(Image.open(__import__("io").BytesIO(body))).astype(int)
    ref = np.asarray(Image.open(tmp_path / "h.decoded.png")).astype(int)
    assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1  # float synthesis: ±1 level across threads
    assert "no pixels" in _error(server.post("/v1/decompress", FILES["dicm-lite0"].read_bytes()))


def test_bad_requests_each_get_their_status_and_the_server_goes_on(server):
    good = FILES["dicm-lite0"].read_bytes()
    huge = bitstream.pack(Header(model_info("dicm-lite0").model_id, 1, 4096, 65536), [bytes(16)])
    cases = [
        (server.post("/v1/analyze", b"garbage"), 400, "not a valid .icm"),
        (server.post("/v1/analyze", good[:-3]), 400, "not a valid .icm"),
        (server.post("/v1/analyze", bitstream.pack(Header(99, 1, 8, 8), [b""])), 400, "not served"),
        (server.post("/v1/analyze", bytes(300_000)), 413, "--max-body"),
        (server.post("/v1/analyze?task=segment", FILES["bai2022-fmnist"].read_bytes()), 422, "does not run task"),
        (server.post("/v1/analyze?task=fly", good), 422, "unknown task"),
        (server.post("/v1/analyze?top=many", good), 422, "top must be a number"),
        (server.post("/v1/analyze", FILES["hyperprior"].read_bytes()), 422, "no analysis tasks"),
        (server.post("/v1/analyze", GOLDEN.joinpath("dicm-lite0-q6.icm").read_bytes()), 422, "q6 is not served"),
        (server.get("/v1/analyze"), 405, "not allowed"),
        (server.get("/docs"), 404, "no such endpoint"),
        (server.post("/_icm/work", b"{}"), 404, "no such endpoint"),
    ]
    for got, status, words in cases:
        assert got[0] == status and words in _error(got), (status, words, got[0], got[2][:200])
    before = _peak_kb(server.proc.pid)
    t = time.perf_counter()
    got = server.post("/v1/analyze", huge)
    assert got[0] == 413 and "268.4 Mpx" in _error(got) and time.perf_counter() - t < 1.0
    for _ in range(20):
        assert server.post("/v1/analyze", huge)[0] == 413
    assert _peak_kb(server.proc.pid) - before < 20_000  # kB: nothing of the declared size was allocated
    assert server.get("/health")[0] == 200
    assert server.post("/v1/analyze", good)[0] == 200


def test_sixteen_concurrent_clients_all_answered_right(server, run_cli):
    expected = {n: _expected(run_cli, p) for n, p in FILES.items() if n != "hyperprior"}
    jobs = [n for n in expected for _ in range(24)]

    def one(name):
        status, _, body = server.post("/v1/analyze", FILES[name].read_bytes())
        return name, status, json.loads(body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, jobs))
    assert len(answers) == len(jobs)
    wrong = [(n, s) for n, s, a in answers if s != 200 or a != expected[n]]
    assert not wrong, wrong[:3]
    metrics = server.get("/metrics")[2].decode()
    assert 'icm_requests_total{path="/v1/analyze",status="200"}' in metrics
    assert "icm_request_seconds_bucket" in metrics and "icm_queue_depth 0" in metrics


def test_icm_send_prints_what_icm_analyze_prints(server, run_cli, tmp_path):
    path = tmp_path / "x.icm"
    path.write_bytes(FILES["bai2022-fmnist"].read_bytes())
    r = run_cli("send", server.url, path, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out) == {**_expected(run_cli, path), "file": str(path)}
    # an image is compressed first, then sent
    img = tmp_path / "boot.png"
    Image.open(GOLDEN.parent.parent / "src/icm/samples/fashion_mnist/9-ankle-boot.png").save(img)
    r = run_cli("send", server.url, img, "tmp-missing.icm", "-m", "bai2022-fmnist", "-q", "9")
    assert r.code == 2 and "Ankle boot" in r.out.splitlines()[1]
    assert len(r.err_lines) == 1 and "tmp-missing.icm" in r.err_lines[0]


def test_token_and_bind_rules(run_cli, tmp_path):
    r = run_cli("serve", "--host", "0.0.0.0", "--port", _free_port())
    assert r.code == 2 and "--token-file" in r.err and len(r.err_lines) == 1
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    slow = codec.encode(codec.get_model("bai2022-fmnist", 9), torch.full((1, 3, 560, 560), 0.5))[0]
    s = Server("--models", "bai2022-fmnist:9", "--token-file", str(token), "--timeout", "1", run_for=120)
    try:
        auth = {"Authorization": "Bearer s3cret-token"}
        data = FILES["bai2022-fmnist"].read_bytes()
        assert s.post("/v1/analyze", data)[0] == 401
        assert "bearer token" in _error(s.post("/v1/analyze", data, headers={"Authorization": "Bearer nope"}))
        assert s.get("/v1/models")[0] == 401
        assert s.post("/v1/analyze", data, headers=auth)[0] == 200
        r = run_cli("send", s.url, FILES["bai2022-fmnist"], "--token-file", token)
        assert r.code == 0 and "q9" in r.out
        t = time.perf_counter()
        got = s.post("/v1/analyze", slow, headers=auth)  # seconds of attention over 19,600 tokens
        assert got[0] == 504 and "--timeout" in _error(got) and time.perf_counter() - t < 3.5
    finally:
        assert "stopped" in s.stop()


# -- in process: the engine-agnostic pieces ----------------------------------------------------------------


def test_a_failure_inside_the_model_is_that_request_alone(monkeypatch):
    from icm.serve.service import Service

    svc = Service({"bai2022-fmnist": (9,)})
    data = FILES["bai2022-fmnist"].read_bytes()
    jobs = [svc.admit(data) for _ in range(3)]
    real = Service._compute
    seen = []

    def sometimes(self, job):
        seen.append(job)
        if len(seen) == 2:
            raise RuntimeError("boom")
        return real(self, job)

    monkeypatch.setattr(Service, "_compute", sometimes)
    out = svc.run(jobs)
    assert out[1].status == 500 and "RuntimeError" in out[1].message
    assert out[0] == out[2] and out[0]["top5"][0]["label"]


def test_batched_requests_answer_as_one_by_one():
    """What a worker takes from the queue together is answered exactly as alone."""
    from icm.serve.service import Service

    svc = Service({"dicm-lite0": (1, 6), "bai2022-fmnist": (9,)})
    datas = [FILES["dicm-lite0"].read_bytes(), GOLDEN.joinpath("dicm-lite0-q6.icm").read_bytes(),
             FILES["bai2022-fmnist"].read_bytes(), FILES["dicm-lite0"].read_bytes()]
    jobs = [svc.admit(d, task=t) for d, t in zip(datas, ["classify", "segment", None, "detect"])]
    assert svc.run(jobs) == [svc.run([j])[0] for j in jobs]


def test_queue_full_is_503_with_retry_after():
    from icm.serve.lit import Gate

    release = asyncio.Event()

    async def slow_app(scope, receive, send):  # stands in for LitServe: answers when released
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        body = json.dumps({"model": "m", "_batch": 1}).encode()
        await send({"type": "http.response.body", "body": body})

    config = {"models": {"bai2022-fmnist": [9]}, "max_pixels": 8_000_000, "max_seconds": 30.0,
              "max_body": 1 << 20, "max_queue": 2, "device": "cpu"}
    gate = Gate(slow_app, config)
    data = FILES["bai2022-fmnist"].read_bytes()

    async def call():
        sent = []
        scope = {"type": "http", "method": "POST", "path": "/v1/analyze", "query_string": b"", "headers": []}
        messages = [{"type": "http.request", "body": data, "more_body": False}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(m):
            sent.append(m)

        await gate(scope, receive, send)
        return sent[0]["status"], dict(sent[0].get("headers", [])), sent[1]["body"] if len(sent) > 1 else b""

    async def main():
        first = [asyncio.create_task(call()) for _ in range(2)]
        await asyncio.sleep(0.05)
        status, headers, body = await call()
        release.set()
        return status, headers, body, await asyncio.gather(*first)

    status, headers, body, firsts = asyncio.run(main())
    assert status == 503 and headers[b"retry-after"] == b"1" and "--max-queue" in json.loads(body)["error"]
    assert [f[0] for f in firsts] == [200, 200]
    assert gate.metrics.in_flight == 0


def test_client_retries_503_and_gives_up_with_the_servers_line():
    import http.server

    from icm.client import Client, ServerError

    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(self.path)
            ok = len(hits) >= 3
            body = json.dumps({"model": "m"} if ok else {"error": "busy"}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert Client(url, backoff=0.01).analyze(b"x", task="classify") == {"model": "m"}
        assert len(hits) == 3 and hits[0] == "/v1/analyze?task=classify"
        hits.clear()
        with pytest.raises(ServerError, match="503: busy"):
            Client(url, retries=1, backoff=0.01).analyze(b"x")
    finally:
        srv.shutdown()
        srv.server_close()
    with pytest.raises(Exception, match="cannot reach"):
        Client(f"http://127.0.0.1:{_free_port()}", retries=1, backoff=0.01).health()
