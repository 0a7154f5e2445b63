"""``icm serve`` on LitServe: a thin wrapper around :class:`icm.serve.service.Service`.

Two pieces, both only moving bytes:

* :class:`Gate`, an ASGI middleware in the HTTP process.  It owns the public
  API: it answers ``/health``, ``/v1/models`` and ``/metrics`` itself, and for
  ``/v1/analyze`` and ``/v1/decompress`` it checks the token, reads the body up
  to ``--max-body``, admits the file from its header (400 / 413 / 422 before
  anything is queued), refuses with 503 when ``--max-queue`` requests are in
  flight, and forwards the rest as JSON to LitServe's internal route.  Every
  other path is 404, LitServe's own routes included; every error body is
  ``{"error": "<one line>"}``.
* :class:`IcmAPI`, the ``LitAPI`` in each inference worker: it builds the
  models once (``setup``), admits again (the worker trusts nothing) and runs
  :meth:`Service.run` on what LitServe's loop hands it (one request, or up to
  ``--max-batch`` that arrived within ``--batch-timeout``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from urllib.parse import parse_qs

import litserve as ls
from fastapi import HTTPException

from .service import Service, ServiceError

WORK_PATH = "/_icm/work"
HEALTH_PATH = "/_icm/health"
PUBLIC = {("GET", "/health"), ("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/v1/analyze"),
          ("POST", "/v1/decompress")}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def make_service(config: dict, token: str | None = None) -> Service:
    from ..limits import Limits, resolve

    limits = resolve(Limits(max_seconds=config["max_seconds"]), config["max_pixels"])
    return Service(models={k: tuple(v) for k, v in config["models"].items()}, limits=limits,
                   max_body=config["max_body"], token=token, device=config["device"])


class Metrics:
    """Prometheus counters of the HTTP process."""

    def __init__(self):
        self.requests: dict[tuple[str, int], int] = {}
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batches: dict[int, int] = {}
        self.in_flight = 0

    def observe(self, path: str, status: int, seconds: float) -> None:
        self.requests[path, status] = self.requests.get((path, status), 0) + 1
        self.latency[next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b), len(LATENCY_BUCKETS))] += 1
        self.latency_sum += seconds

    def text(self) -> str:
        lines = ["# HELP icm_requests_total Requests answered, by endpoint and status.",
                 "# TYPE icm_requests_total counter"]
        for (path, status), n in sorted(self.requests.items()):
            lines.append(f'icm_requests_total{{path="{path}",status="{status}"}} {n}')
        lines += ["# HELP icm_request_seconds Time from a request's arrival to its answer.",
                  "# TYPE icm_request_seconds histogram"]
        total = 0
        for b, n in zip((*LATENCY_BUCKETS, "+Inf"), self.latency):
            total += n
            lines.append(f'icm_request_seconds_bucket{{le="{b}"}} {total}')
        lines += [f"icm_request_seconds_sum {self.latency_sum:.6f}", f"icm_request_seconds_count {total}",
                  "# HELP icm_batch_requests Requests per batch taken from the queue by a worker.",
                  "# TYPE icm_batch_requests counter"]
        for size, n in sorted(self.batches.items()):
            lines.append(f'icm_batch_requests{{size="{size}"}} {n}')
        lines += ["# HELP icm_queue_depth Requests admitted and not yet answered.", "# TYPE icm_queue_depth gauge",
                  f"icm_queue_depth {self.in_flight}"]
        return "\n".join(lines) + "\n"


class Gate:
    """The public HTTP API in front of LitServe (see the module's docstring)."""

    def __init__(self, app, config: dict, token: str | None = None):
        self.app = app
        self.service = make_service(config, token)
        self.max_queue = config["max_queue"]
        self.timeout = float(config.get("timeout", 30.0))
        self.metrics = Metrics()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.monotonic()
        path, method = scope["path"], scope["method"]
        status = 500
        try:
            status = await self._route(scope, receive, send, path, method)
        except ServiceError as e:
            status = e.status
            await _send_json(send, e.status, e.body(), retry_after=e.retry_after)
        except _Disconnected:
            status = 499
        finally:
            self.metrics.observe(path if (method, path) in PUBLIC else "other", status, time.monotonic() - t0)

    async def _route(self, scope, receive, send, path, method) -> int:
        if (method, path) not in PUBLIC:
            known = {p for _, p in PUBLIC}
            if path in known:
                raise ServiceError(405, f"{method} is not allowed on {path}")
            raise ServiceError(404, f"no such endpoint: {path[:80]}")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if path == "/health":
            status, _, _ = await self._inner(scope, "GET", HEALTH_PATH, b"", {})
            if status == 200:
                await _send_json(send, 200, {"status": "ok"})
                return 200
            raise ServiceError(503, "the models are still loading", retry_after=1)
        self.service.authorize(headers.get("authorization"))
        if path == "/v1/models":
            await _send_json(send, 200, {"models": self.service.model_rows()})
            return 200
        if path == "/metrics":
            await _send(send, 200, self.metrics.text().encode(), "text/plain; version=0.0.4")
            return 200
        declared = headers.get("content-length")
        self.service.check_size(int(declared) if declared and declared.isdigit() else None)
        body = await _read_body(receive, self.service.max_body)
        query = {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode("latin-1")).items()}
        op = "decompress" if path == "/v1/decompress" else "analyze"
        job = self.service.admit(body, op, query.get("task"), query.get("top"), query.get("score_thresh"))
        if self.metrics.in_flight >= self.max_queue:
            raise ServiceError(503, f"{self.metrics.in_flight} requests are waiting (--max-queue); try again",
                               retry_after=1)
        payload = json.dumps({"op": op, "data": base64.b64encode(body).decode(), "task": job.task,
                              "top": job.top, "score_thresh": job.score_thresh}).encode()
        self.metrics.in_flight += 1
        work = asyncio.ensure_future(self._inner(scope, "POST", WORK_PATH, payload, {"content-type": "application/json"}))
        work.add_done_callback(self._finished)  # a request over --timeout still frees its place when done
        done, _ = await asyncio.wait({work}, timeout=self.timeout)
        if not done:
            raise ServiceError(504, f"the request took longer than the server's time limit of {self.timeout:g} s "
                                    "(--timeout)")
        status, _, raw = work.result()
        answer = _json_or_none(raw)
        if status != 200:
            detail = answer.get("detail") if isinstance(answer, dict) else None
            if status == 504:
                detail = "the request took longer than the server's time limit (--timeout)"
            raise ServiceError(status, str(detail or "internal error")[:300])
        size = answer.pop("_batch", 1)
        self.metrics.batches[size] = self.metrics.batches.get(size, 0) + 1
        if op == "decompress":
            await _send(send, 200, base64.b64decode(answer["png"]), "image/png")
        else:
            await _send_json(send, 200, answer)
        return 200

    def _finished(self, _task) -> None:
        self.metrics.in_flight -= 1

    async def _inner(self, scope, method: str, path: str, body: bytes, headers: dict):
        """Run a request through the wrapped app; ``(status, headers, body)``."""
        inner = dict(scope, method=method, path=path, raw_path=path.encode(), query_string=b"",
                     headers=[(k.encode(), v.encode()) for k, v in
                              {**headers, "content-length": str(len(body))}.items()])
        sent = {"status": 500, "headers": [], "body": bytearray()}
        done = False

        async def receive():
            nonlocal done
            if done:
                await asyncio.sleep(3600)
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            if message["type"] == "http.response.start":
                sent["status"], sent["headers"] = message["status"], message.get("headers", [])
            elif message["type"] == "http.response.body":
                sent["body"] += message.get("body", b"")

        await self.app(inner, receive, send)
        return sent["status"], sent["headers"], bytes(sent["body"])


class _Disconnected(Exception):
    pass


async def _read_body(receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ServiceError(413, f"the body is over the limit of {limit} bytes (--max-body)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _json_or_none(raw: bytes):
    try:
        return json.loads(raw)
    except ValueError:
        return None


async def _send(send, status: int, body: bytes, content_type: str, retry_after: int | None = None) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(send, status: int, obj: dict, retry_after: int | None = None) -> None:
    await _send(send, status, json.dumps(obj, allow_nan=False).encode(), "application/json", retry_after)


class IcmAPI(ls.LitAPI):
    """The inference worker: the served models, built once, answering admitted files."""

    def __init__(self, config: dict, max_batch_size: int = 1, batch_timeout: float = 0.0):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path=WORK_PATH)
        self.config = config

    def setup(self, device):
        from .. import threads

        threads.apply(self.config.get("threads"))
        self.service = make_service(self.config)
        self.service.load()

    def decode_request(self, request):
        try:
            body = base64.b64decode(request["data"], validate=True)
            return self.service.admit(body, request["op"], request.get("task"), request.get("top"),
                                      request.get("score_thresh"))
        except ServiceError as e:
            return e
        except (KeyError, TypeError, ValueError):
            return ServiceError(400, "malformed internal request")

    def batch(self, inputs):
        return list(inputs)

    def unbatch(self, output):
        return list(output)

    def predict(self, x):
        jobs = x if isinstance(x, list) else [x]
        admitted = [j for j in jobs if not isinstance(j, ServiceError)]
        answers = iter(self.service.run(admitted))
        out = [j if isinstance(j, ServiceError) else next(answers) for j in jobs]
        sized = [(o, len(jobs)) for o in out]
        return sized if isinstance(x, list) else sized[0]

    def encode_response(self, output):
        answer, size = output
        if isinstance(answer, ServiceError):
            raise HTTPException(status_code=answer.status, detail=answer.message)
        if isinstance(answer, bytes):
            return {"png": base64.b64encode(answer).decode(), "_batch": size}
        return {**answer, "_batch": size}


def build_server(config: dict, token: str | None, workers: int, max_batch: int, batch_timeout_ms: float,
                 timeout: float):
    """The LitServer for ``config`` (what :func:`run` starts)."""
    import warnings

    warnings.filterwarnings("ignore", message="The LitServer has both batch and unbatch")  # batch 1 is a choice
    api = IcmAPI(config, max_batch_size=max_batch, batch_timeout=batch_timeout_ms / 1000.0)
    return ls.LitServer(api, accelerator=config["device"], devices=1, workers_per_device=workers,
                        timeout=timeout, healthcheck_path=HEALTH_PATH, info_path="/_icm/info",
                        disable_openapi_url=True, middlewares=[(Gate, {"config": config, "token": token})])
