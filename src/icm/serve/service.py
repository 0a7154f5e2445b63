"""The request logic of ``icm serve``, independent of any serving engine.

:class:`Service` does what every engine needs and nothing an engine does: it
admits a request from its bytes alone (bearer token, body size, the ``.icm``
header, the served models, the task, the decode limits: no decoding, nothing
allocated), runs admitted requests (entropy decoding per file, then the
network, one batch per model, quality and picture size), and renders every
answer and every error as the JSON the API promises.  The LitServe wrapper
(:mod:`icm.serve.lit`) only moves bytes between HTTP and these methods; a Ray
Serve or plain-ASGI wrapper would do the same.

Errors are :class:`ServiceError` with the HTTP status and one line; no message
echoes a path or the request's bytes.
"""

from __future__ import annotations

import hmac
import io
import ipaddress
import math
from dataclasses import dataclass, field

from .. import bitstream
from ..errors import BitstreamError, IcmError
from ..limits import LimitError, Limits, resolve
from ..tasks import REPORT_SCORE
from ..tasks import TASK_NAMES as TASKS

DEFAULT_MAX_BODY = 4 << 20  # bytes: a 4K UHD hyperprior file at its highest quality is ~1.3 MB
DEFAULT_TOP = 5
MAX_TOP = 100


class ServiceError(Exception):
    """An answer other than 200: ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after

    def body(self) -> dict:
        return {"error": self.message}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only reaches this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_models(spec: str | None) -> dict[str, tuple[int, ...]]:
    """``NAME[:Q,…],…`` → ``{name: qualities}`` (every shipped quality where none are given;
    default: every model with shipped weights).

    Raises:
        IcmError: an unknown model, or a quality without shipped weights.
    """
    from ..models import has_weights, list_models, model_info

    def shipped(name):
        return tuple(q for q in model_info(name).qualities if has_weights(name, q))

    if not spec:
        out = {n: shipped(n) for n in list_models() if shipped(n)}
        if not out:
            raise IcmError("no model with shipped weights to serve")
        return out
    out: dict[str, tuple[int, ...]] = {}
    name = None  # NAME:Q,Q,NAME2: a bare number continues the previous model's qualities
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if ":" in part:
            name, _, q = part.partition(":")
            info = model_info(name.strip())
            name = info.name
            out[name] = (*out.get(name, ()), int(q)) if q.strip().isdigit() else _bad_quality(name, q)
        elif part.isdigit() and name is not None:
            out[name] = (*out[name], int(part))
        else:
            info = model_info(part)
            name = info.name
            out[name] = shipped(name)
    for name, qualities in out.items():
        missing = [q for q in qualities if not has_weights(name, q)]
        if missing or not qualities:
            raise IcmError(f"no shipped weights for {name} at q{', q'.join(map(str, missing or ['?']))}")
    return out


def _bad_quality(name: str, q: str):
    raise IcmError(f"--models {name}:{q}: qualities are whole numbers")


@dataclass(frozen=True)
class Job:
    """An admitted request: the parsed file and what to do with it."""

    file: bitstream.IcmFile
    model: str
    op: str  # "analyze" or "decompress"
    task: str | None = None
    top: int = DEFAULT_TOP
    score_thresh: float = REPORT_SCORE



@dataclass
class Service:
    """Admission, execution and rendering for the served ``models``."""

    models: dict[str, tuple[int, ...]]
    limits: Limits = field(default_factory=resolve)
    max_body: int = DEFAULT_MAX_BODY
    token: str | None = None
    device: str = "cpu"
    ready: bool = False

    # -- admission: from the request's bytes alone ------------------------------------------------------

    def authorize(self, authorization: str | None) -> None:
        """401 unless the ``Authorization`` header carries the bearer token (compared in constant time)."""
        if self.token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        ok = hmac.compare_digest(given.strip().encode(), self.token.encode())
        if scheme.lower() != "bearer" or not ok:
            raise ServiceError(401, "missing or wrong bearer token")

    def check_size(self, declared: int | None) -> None:
        if declared is not None and declared > self.max_body:
            raise ServiceError(413, f"the body is {declared} bytes, over the limit of {self.max_body} (--max-body)")

    def admit(self, body: bytes, op: str = "analyze", task: str | None = None, top: str | int | None = None,
              score_thresh: str | float | None = None) -> Job:
        """Parse and check one request; :class:`ServiceError` (400, 413, 422) if it cannot run."""
        self.check_size(len(body))
        if op == "analyze":
            if task is not None and task not in TASKS:
                raise ServiceError(422, f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
            top = _number(top, DEFAULT_TOP, "top", int, 1, MAX_TOP)
            score_thresh = _number(score_thresh, REPORT_SCORE, "score_thresh", float, 0.0, 1.0)
        from .. import codec
        from ..models import model_info_by_id
        from ..models._registry import heads_tasks

        try:
            f = codec.parse(body)
        except BitstreamError as e:
            raise ServiceError(400, f"not a valid .icm file: {e}") from None
        info = model_info_by_id(f.header.model_id)
        if info is None or info.name not in self.models:
            served = ", ".join(sorted(self.models))
            what = info.name if info is not None else f"model id {f.header.model_id}"
            raise ServiceError(422 if info is not None else 400, f"{what} is not served here (served: {served})")
        if f.header.quality not in self.models[info.name]:
            raise ServiceError(422, f"{info.name} q{f.header.quality} is not served here "
                                    f"(served: q{', q'.join(map(str, self.models[info.name]))})")
        try:
            codec.check_limits(f, limits=self.limits)
        except LimitError as e:
            raise ServiceError(413, str(e)) from None
        if op == "decompress":
            if not info.pixel_decoder:
                raise ServiceError(422, f"{info.name} files carry no pixels; POST them to /v1/analyze")
            return Job(f, info.name, op)
        tasks = tuple(info.tasks) + heads_tasks(info.name)
        if not tasks:
            raise ServiceError(422, f"{info.name} runs no analysis tasks; POST its files to /v1/decompress")
        task = task or tasks[0]
        if task not in tasks:
            raise ServiceError(422, f"{info.name} does not run task {task!r} (its tasks: {', '.join(tasks)})")
        try:  # a task that costs more than the decode (detection heads, masks) is priced with it
            codec.check_limits(f, limits=self.limits, task=task)
        except LimitError as e:
            raise ServiceError(413, str(e)) from None
        return Job(f, info.name, op, task, top, score_thresh)

    # -- execution ------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Build every served model (and its detection heads) once."""
        from .. import codec

        for name, qualities in self.models.items():
            for q in qualities:
                model = codec.get_model(name, q)
                if self.device != "cpu":
                    model.to(self.device)
                codec.get_heads(model)
        self.ready = True

    def run(self, jobs: list[Job]) -> list[dict | bytes | ServiceError]:
        """Answer admitted jobs in order, each alone: a failure is that job's only.

        Requests that arrive together (``--max-batch``) are taken from the queue as one
        batch, but each file is entropy-decoded and run through the network by itself.
        Stacking them into one tensor would save little on a CPU (7% for eight
        ``dicm-lite0`` crops) and changes the answers in their last bits (float
        kernels of another batch size: up to 2.9e-6 in a logit), which a service must
        not do."""
        return [self._answer(job) for job in jobs]

    def _answer(self, job: Job):
        try:
            return self._compute(job)
        except ServiceError as e:
            return e
        except BitstreamError as e:
            return ServiceError(400, str(e))
        except IcmError as e:
            return ServiceError(422, str(e))
        except ValueError as e:
            return ServiceError(400, f"corrupted .icm payload: {e}")
        except Exception as e:
            return ServiceError(500, f"internal error while answering ({e.__class__.__name__})")

    def _compute(self, job: Job):
        from .. import codec
        from ..models import Compressed

        h = job.file.header
        model = codec.get_model(job.model, h.quality)
        if len(job.file.sections) != model.num_sections:
            raise ServiceError(400, f"{job.model} files have {model.num_sections} sections, "
                                    f"this one has {len(job.file.sections)}")
        coded = Compressed([job.file.sections], (h.height, h.width))
        if job.op == "decompress":
            x_hat = model.decompress(coded, pixels=True)["x_hat"]
            codec.check_finite([x_hat], "pixels")
            return _png(codec.to_uint8(x_hat))
        if job.task in codec.DETECTION_TASKS:
            from ..tasks.detection import detect_from_bitstream

            heads = codec.heads_for(model, job.task)
            (det,) = detect_from_bitstream(model, heads, coded, masks=job.task == "segment")
            codec.check_finite(list(det.values()), "detections")
            return self._detections(job, det, heads)
        logits = model.analyze(coded, task=job.task)
        codec.check_finite([logits], "classify outputs")
        return self._classes(job, model, logits[0])

    # -- rendering: the JSON of `icm analyze --json`, without "file" -----------------------------------------

    def _classes(self, job: Job, model, logits) -> dict:
        from ..tasks.results import analysis_row, top_classes

        top = top_classes(logits, getattr(model, "class_names", None), job.top)
        return {**analysis_row(job.file, job.model, job.task), f"top{job.top}": top}

    def _detections(self, job: Job, det, heads) -> dict:
        from ..tasks.results import analysis_row, to_records

        records = to_records(det, heads.categories, job.score_thresh, masks=job.task == "segment")
        return {**analysis_row(job.file, job.model, job.task), "detections": records}

    def model_rows(self) -> list[dict]:
        """The ``icm models --json`` rows of what is served (``weights``: the served qualities)."""
        from ..models._registry import model_row

        return [{**model_row(name), "weights": list(qualities)} for name, qualities in sorted(self.models.items())]


def _number(raw, default, name: str, kind, lo, hi):
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except (TypeError, ValueError):
        raise ServiceError(422, f"{name} must be a number, not {str(raw)[:40]!r}") from None
    if not (lo <= value <= hi) or (isinstance(value, float) and not math.isfinite(value)):
        raise ServiceError(422, f"{name} must be within [{lo}, {hi}], not {value}")
    return value


def _png(pixels) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
