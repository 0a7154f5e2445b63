"""``icm serve`` (the cloud side) and ``icm send`` (the edge's one-liner)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from ..errors import IcmError
from ..tasks import TASK_NAMES


def add_serve_parsers(sub, positive, non_negative) -> None:
    from ..limits import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SECONDS
    from .service import DEFAULT_MAX_BODY

    s = sub.add_parser("serve", help="receive .icm files over HTTP and answer with classes, boxes and masks "
                                     "('serve' extra)",
                       description="Serve the shipped models over HTTP: POST /v1/analyze?task=T, POST "
                                   "/v1/decompress, GET /health, /v1/models, /metrics (docs/serving.md).")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; any other "
                                                       "address needs --token-file)")
    s.add_argument("--port", type=positive, default=8000)
    s.add_argument("--models", default=None, metavar="NAME[:Q,...],...",
                   help="models and qualities to serve (default: every model with shipped weights)")
    s.add_argument("--workers", type=positive, default=1, metavar="N", help="inference processes (default 1)")
    s.add_argument("--max-batch", type=positive, default=1, metavar="B",
                   help="requests a worker takes from the queue at once (default 1; each file still runs alone)")
    s.add_argument("--batch-timeout", type=float, default=0.0, metavar="MS",
                   help="how long a worker waits to fill a batch, in milliseconds (default 0)")
    s.add_argument("--max-pixels", type=non_negative, default=DEFAULT_MAX_PIXELS, metavar="P",
                   help=f"413 for files declaring more pixels (default {DEFAULT_MAX_PIXELS}; 0: no limit)")
    s.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS, metavar="S",
                   help=f"413 for files whose decode the header prices above S CPU seconds "
                        f"(default {DEFAULT_MAX_SECONDS:g})")
    s.add_argument("--max-body", type=positive, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help=f"413 for larger bodies (default {DEFAULT_MAX_BODY})")
    s.add_argument("--max-queue", type=positive, default=64, metavar="N",
                   help="503 (Retry-After) beyond N requests in flight (default 64)")
    s.add_argument("--timeout", type=float, default=30.0, metavar="S", help="time limit per request (default 30)")
    s.add_argument("--token-file", metavar="FILE", help="require 'Authorization: Bearer <the file's first line>'")
    s.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    s.add_argument("--run-for", type=float, default=None, metavar="S",
                   help="stop by itself after S seconds (tests, benchmarks)")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("send", help="send .icm files (or images, compressed first) to an icm serve and print "
                                    "its answers as icm analyze does")
    s.add_argument("url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000")
    s.add_argument("files", nargs="+", metavar="FILE", help=".icm files, sent as they are, or images")
    s.add_argument("--task", default=None, choices=TASK_NAMES,
                   help="default: the model's first task")
    s.add_argument("--top", type=positive, default=None, metavar="K")
    s.add_argument("--json", action="store_true", help='one JSON object per line, as icm analyze --json')
    s.add_argument("--token-file", metavar="FILE")
    s.add_argument("-m", "--model", default="dicm-lite0", help="model that compresses images (default dicm-lite0)")
    s.add_argument("-q", "--quality", type=int, default=None, help="quality that compresses images")
    s.add_argument("--timeout", type=float, default=60.0, metavar="S")
    s.set_defaults(func=cmd_send)


def read_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as e:
        raise IcmError(f"cannot read --token-file {path}: {e.strerror or e}") from None
    if not token or not token[0].strip():
        raise IcmError(f"--token-file {path} is empty")
    return token[0].strip()


def cmd_serve(args) -> int:
    from .service import is_loopback, parse_models

    token = read_token(args.token_file)
    if not is_loopback(args.host) and token is None:
        raise IcmError(f"--host {args.host} is reachable from other machines: give --token-file FILE "
                       "(or bind 127.0.0.1 behind a proxy that authenticates)")
    if not args.timeout > 0 or not args.max_seconds > 0 or args.batch_timeout < 0:
        raise IcmError("--timeout and --max-seconds must be > 0 and --batch-timeout >= 0")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise IcmError("--device cuda: no CUDA device is available here")
    models = parse_models(args.models)
    from .. import threads

    config = {"models": {k: list(v) for k, v in models.items()}, "max_pixels": args.max_pixels,
              "max_seconds": args.max_seconds, "max_body": args.max_body, "max_queue": args.max_queue,
              "device": args.device, "timeout": args.timeout,
              "threads": max(1, threads.default_threads() // args.workers)}  # the cores, shared by the workers
    from .lit import build_server

    server = build_server(config, token, args.workers, args.max_batch, args.batch_timeout, args.timeout)
    # LitServe waits up to 30 s for open connections when it stops, then for its workers and
    # manager; a client's keep-alive connection then keeps a stopped server alive that long
    server.uvicorn_graceful_timeout = GRACEFUL_STOP_S
    served = ", ".join(f"{k} q{','.join(map(str, v))}" for k, v in models.items())
    print(f"icm serve: http://{args.host}:{args.port} ({served}; {args.workers} worker(s), "
          f"{config['threads']} thread(s) each{', token required' if token else ''})", flush=True)
    if args.run_for is not None:
        timer = threading.Timer(args.run_for, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()

    def on_stop(signum, frame):  # LitServe's graceful stop, bounded: then every child is ended
        watchdog = threading.Thread(target=_force_stop, daemon=True)
        watchdog.start()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    try:
        server.run(host=args.host, port=args.port, num_api_servers=1, generate_client_file=False,
                   log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        _stop_children()
    print("icm serve: stopped", flush=True)
    return 0


GRACEFUL_STOP_S = 3  # seconds a stopping server waits for open connections
FORCED_STOP_S = 20  # seconds after which a stopping server ends its children and exits


def _force_stop() -> None:
    time.sleep(FORCED_STOP_S)
    _stop_children(grace=1.0)
    print("icm serve: stopped (forced after the graceful stop took too long)", flush=True)
    os._exit(0)


def _stop_children(grace: float = 5.0) -> None:
    """End every process the server started (inference workers, LitServe's manager): a
    worker still computing a request that timed out would otherwise outlive the server."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(grace)
        if child.is_alive():
            child.kill()
            child.join(grace)


def cmd_send(args) -> int:
    from ..client import Client
    from .._cliutil import _error, _quality

    client = Client(args.url, token=read_token(args.token_file), timeout=args.timeout)
    quality = None
    failed = 0
    for path in args.files:
        try:
            p = Path(path)
            if p.suffix.lower() == ".icm":
                data = _read(p)
            else:  # an image: coded here first (torch), .icm files go as they are
                from .. import codec

                quality = quality or _quality(args.model, args.quality)
                data = codec.encode(codec.get_model(args.model, quality), codec.load_image(p))[0]
            row = client.analyze(data, task=args.task, top=args.top)
            _print(path, row, args.json)
        except IcmError as e:
            _error(path, e)
            failed += 1
    return 2 if failed else 0


def _read(p: Path) -> bytes:
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise IcmError(f"no such file: {p}") from None
    except IsADirectoryError:
        raise IcmError(f"{p} is a directory, not an .icm file") from None


def _print(path, row: dict, as_json: bool) -> None:
    from .._cliutil import _print_answer_lines

    if as_json:
        print(json.dumps({"file": str(path), **row}, allow_nan=False))
        return
    head = f"{path}: {row['model']} q{row['quality']}, {row['bytes']} bytes, {row['bpp']:.4f} bpp"
    if "detections" in row:
        n = len(row["detections"])
        head += f", {n} detection{'s' if n != 1 else ''}"
    print(head)
    _print_answer_lines(row)
    sys.stdout.flush()
