"""Fuzz targets of the ``.icm`` side: the container parser, each shipped family's decoder
and analysis, and the service's admission path.

============================  ==========================================================
``bitstream``                 :func:`icm.preflight.parse` (``bitstream.unpack``) and the
                              header-only refusals (``check_decode``, ``check_analyze``)
``codec-<family>``            ``codec.decode`` and ``codec.analyze`` of one family with
                              shipped weights, at its file's quality
``service``                   ``Service.admit`` + ``Service.run`` on a raw request body
============================  ==========================================================

The contract, beyond :func:`icm.fuzz.check`'s (only :class:`icm.errors.IcmError`
escapes):

* an answer holds finite numbers only: latents, pixels, logits, boxes, scores, masks,
  and the service's JSON (written with ``allow_nan=False``); pixels have the header's
  size; a parsed file packs back to the same bytes;
* a decode stays within what its header priced (:func:`icm.preflight.check_limits`,
  default limits on): CPU time at most ``2 × priced + 1 s``, growth of the process's
  peak memory at most ``2 × priced + 256 MB`` (the slack covers kernels' workspaces);
* the service answers 400, 413 or 422 for what it refuses, never 500.

A broken rule raises :class:`Finding`.  Torch runs at one thread; every model is built
once per process (``codec.get_model`` caches it) and outside the measured decode.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import resource
import time
import zlib
from pathlib import Path

from ..errors import IcmError

SLACK_SECONDS = 1.0
SLACK_BYTES = 256 << 20
GOLDEN = next((p for p in (Path(__file__).resolve().parents[3] / "tests" / "golden", Path("tests", "golden"))
               if p.is_dir()), Path("tests", "golden"))
"""The repository's golden files (seeds where the repository is at hand: an editable
install's, or the working folder's)."""


class Finding(AssertionError):
    """A broken contract that is not an exception of its own (a NaN in an answer, a
    decode past its priced time or memory, a 500)."""


def shipped_families() -> list[str]:
    """Families with at least one shipped weight file (each gets a ``codec-`` target)."""
    from ..models import has_weights, list_models, model_info

    return [n for n in list_models() if any(has_weights(n, q) for q in model_info(n).qualities)]


@contextlib.contextmanager
def one_thread():
    import torch

    before = torch.get_num_threads()
    if before != 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            torch.set_num_threads(before)


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def priced(cost, run, what: str):
    """``run()``, held to ``cost`` (:class:`icm.limits.DecodeCost`); an :class:`IcmError` is an
    answer (``None``)."""
    peak, t0 = _peak_bytes(), time.process_time()
    try:
        return run()
    except IcmError:
        return None
    finally:
        spent, grown = time.process_time() - t0, _peak_bytes() - peak
        if spent > 2 * cost.seconds + SLACK_SECONDS:
            raise Finding(f"{what} took {spent:.2f} s of CPU, priced at {cost.seconds:.3f} s")
        if grown > 2 * cost.memory_bytes + SLACK_BYTES:
            raise Finding(f"{what} grew the peak memory by {grown / 1e6:.0f} MB, priced at {cost.memory_bytes / 1e6:.1f} MB")


def finite(values, what: str) -> None:
    import torch

    for v in values:
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise Finding(f"{what}: an answer holds NaN or inf")


# -- bitstream -------------------------------------------------------------------------------------------


def bitstream_target(data: bytes) -> None:
    from .. import bitstream, preflight
    from ..tasks import TASK_NAMES

    f = preflight.parse(data)
    stored = f.written_as or f.header
    if bitstream.pack(stored, f.sections) != data:
        raise Finding("unpack accepted bytes that pack does not write back byte for byte")
    h = f.header
    if not (1 <= h.height <= bitstream.MAX_SIDE and 1 <= h.width <= bitstream.MAX_SIDE) or h.height * h.width > bitstream.MAX_PIXELS:
        raise Finding(f"a parsed header declares {h.height}x{h.width}")
    if f.header_bytes < 0 or not math.isfinite(f.bpp) or len(f.sections) > bitstream.MAX_SECTIONS:
        raise Finding("a parsed file's sizes do not add up")
    for pixels in (True, False):
        with contextlib.suppress(IcmError):
            preflight.check_decode(f, pixels)
    for task in (None, *TASK_NAMES):
        with contextlib.suppress(IcmError):
            preflight.check_analyze(f, task)
    with contextlib.suppress(IcmError):
        cost = preflight.check_limits(f)
        if not (math.isfinite(cost.seconds) and math.isfinite(cost.memory_bytes)):
            raise Finding("a header's price is not finite")


# -- codec.decode / codec.analyze, one family ------------------------------------------------------------


def codec_target(family: str, data: bytes) -> None:
    """Decode and analyse ``data`` if its header names ``family`` (other files are parsed
    and left: the ``service`` and ``bitstream`` targets cover the dispatch)."""
    from .. import codec, preflight
    from ..models._registry import heads_tasks
    from ..tasks import DETECTION_TASKS

    f = codec.parse(data)
    info = preflight.model_of(f.header)
    if info.name != family:
        return
    cost = codec.check_limits(f)
    with one_thread():
        model = codec.model_for(f.header)  # built once per process, outside the measure
        h, w = f.header.height, f.header.width

        def decode():
            out = codec.decode(data, pixels=info.pixel_decoder)
            finite([out["y_hat"], out.get("x_hat")], "decode")
            x = out.get("x_hat")
            if x is not None and tuple(x.shape[-2:]) != (h, w):
                raise Finding(f"decoded pixels are {tuple(x.shape)}, the header says {h}x{w}")

        priced(cost, decode, "decode")
        tasks = tuple(info.tasks) + heads_tasks(family)
        if not tasks:
            with contextlib.suppress(IcmError):
                codec.analyze(data)
                raise Finding(f"{family} has no analysis tasks, yet analyze answered")
            return
        task = tasks[choice(data) % len(tasks)]  # one task per input, decided by its bytes
        if task in DETECTION_TASKS:
            codec.heads_for(model, task)  # built once, outside the measure

        def analyze():
            out = codec.analyze(data, task=task)["output"]
            if task not in DETECTION_TASKS:
                finite([out], task)
                return
            (det,) = out
            finite(det.values(), task)
            boxes, scores = det["boxes"], det["scores"]
            if len(boxes) and (bool((boxes < 0).any()) or bool((boxes[:, 0::2] > w).any()) or bool((boxes[:, 1::2] > h).any())):
                raise Finding(f"{task}: a box outside the {w}x{h} image")
            if len(scores) and not bool(((scores >= 0) & (scores <= 1)).all()):
                raise Finding(f"{task}: a score outside [0, 1]")

        priced(codec.check_limits(f, task=task), analyze, task)


# -- the service's admission path --------------------------------------------------------------------------

# mostly what a client sends, sometimes what it should not
_OPS = ("analyze", "analyze", "analyze", "decompress")
_TASKS = (None, None, None, "classify", "detect", "segment", "caption", "")
_TOPS = (None, None, None, "1", "5", "100", "0", "x")
_THRESHOLDS = (None, None, None, "0.05", "0.5", "1", "nan", "-1")


@functools.lru_cache(maxsize=1)
def _service():
    from ..serve.service import Service, parse_models

    return Service(models=parse_models(None))  # every shipped model, the default limits


def choice(data: bytes) -> int:
    """32 bits that an input's bytes decide: the CRC-32 of all but its last four bytes (the
    stored checksum of a valid file; the CRC of a whole valid file is one constant)."""
    return zlib.crc32(data[:-4])


def request_of(data: bytes) -> tuple[str, str | None, str | None, str | None]:
    """``(op, task, top, score_thresh)`` of a request, decided by its body (:func:`choice`:
    one input, one request, so a finding replays as it was found)."""
    c = choice(data)
    return _OPS[c & 3], _TASKS[(c >> 2) & 7], _TOPS[(c >> 5) & 7], _THRESHOLDS[(c >> 8) & 7]


def service_target(data: bytes) -> None:
    from ..serve.service import ServiceError

    service = _service()
    op, task, top, score = request_of(data)
    try:
        job = service.admit(data, op, task, top, score)
    except ServiceError as e:
        if e.status not in (400, 413, 422) or "\n" in e.message:
            raise Finding(f"admission answered {e.status}: {e.message}") from None
        return
    with one_thread():
        (answer,) = service.run([job])
    check_answer(job, answer)


def check_answer(job, answer) -> None:
    """A run's answer: 400 or 422 (never 500), a PNG of the header's size, or JSON without NaN."""
    from ..serve.service import ServiceError

    if isinstance(answer, ServiceError):
        if answer.status not in (400, 422) or "\n" in answer.message:
            raise Finding(f"the service answered {answer.status}: {answer.message}")
        return
    if isinstance(answer, bytes):
        import io

        from PIL import Image

        size = Image.open(io.BytesIO(answer)).size
        if size != (job.file.header.width, job.file.header.height):
            raise Finding(f"a decompressed PNG of {size}, the header says {job.file.header.width}x{job.file.header.height}")
        return
    try:
        json.dumps(answer, allow_nan=False)
    except ValueError:
        raise Finding("the service's JSON answer holds NaN or inf") from None


# -- seeds -------------------------------------------------------------------------------------------------


def golden(family: str | None = None) -> list[bytes]:
    """The repository's golden files (of one family), where the repository is at hand."""
    from .. import preflight

    out = []
    for p in sorted(GOLDEN.glob("*.icm")) if GOLDEN.is_dir() else ():
        data = p.read_bytes()
        if family is None or preflight.model_of(preflight.parse(data).header).name == family:
            out.append(data)
    return out


@functools.cache
def coded(family: str, quality: int | None = None) -> tuple[bytes, ...]:
    """Two small files per shipped quality of ``family`` (or at ``quality`` alone), coded from
    the bundled samples (a 16×16 crop and an odd 13×21 one; Fashion-MNIST families: a
    28×28 sample and a crop of it)."""
    from importlib import resources

    from .. import codec
    from ..models import has_weights, model_info

    info = model_info(family)
    small = family.endswith("fmnist")
    name = "fashion_mnist/9-ankle-boot.png" if small else "coffee.png"
    with resources.as_file(resources.files("icm.samples").joinpath(name)) as p:
        x = codec.load_image(p)
    crops = [x, x[..., 3:16, 2:23]] if small else [x[..., 120:136, 160:176], x[..., 200:213, 240:261]]
    out = []
    with one_thread():
        for q in info.qualities:
            if has_weights(family, q) and quality in (None, q):
                model = codec.get_model(family, q)
                out += [codec.encode(model, c.contiguous())[0] for c in crops]
    return tuple(out)


def seeds(target: str) -> list[bytes]:
    from .. import bitstream
    from ..models import model_info

    if target == "bitstream":
        made = [bitstream.pack(bitstream.Header(1, 1, 1, 1), []),
                bitstream.pack(bitstream.Header(9, 1, 64, 64), [b"", b"\x01"]),
                bitstream.pack(bitstream.Header(200, 3, 65536, 4096), [bytes([i]) for i in range(16)])]
        return golden() + made + [coded(f)[0] for f in shipped_families()]
    if target == "service":
        return golden() + [c for f in shipped_families() for c in coded(f)[:2]]
    family = target.removeprefix("codec-")
    model_info(family)  # an unknown family raises
    return golden(family) + list(coded(family))
