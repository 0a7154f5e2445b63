"""What decoding a file may cost, decided from its header before anything is allocated.

A valid ``.icm`` header may declare up to 65536×4096 pixels, and a file of a few
hundred bytes of all-zero symbols is enough to make the decoder build every
activation of that size: about 300 bytes of memory per declared pixel for the
hyperprior, and for the Transformer families a time quadratic in the latent's
token count.  So every decode (``codec.decode``, ``codec.analyze``, the CLI and
the service) first prices the file from its header with its family's cost
model (:class:`DecodeCost`, declared beside each family's registration) and
refuses, with one line saying which limit and how to raise it, a file that
declares

* more pixels than ``max_pixels`` (default 3840×2160, 4K UHD: ``--max-pixels``);
* more memory than ``max_memory`` (default: half of this machine's memory);
* more CPU time than ``max_seconds`` (default 30 s at one thread: ``--max-seconds``).

The cost models are fitted to measured decodes (one CPU thread, this project's
x86-64 machine, ``docs/serving.md``); they are estimates, rounded up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from .errors import IcmError

DEFAULT_MAX_PIXELS = 3840 * 2160
DEFAULT_MAX_SECONDS = 30.0


class LimitError(IcmError):
    """A file whose header declares more than a decode limit allows (HTTP 413 in the service)."""


@dataclass(frozen=True)
class DecodeCost:
    """What one family's decode of an ``height × width`` file needs, from the header alone."""

    memory_bytes: float
    seconds: float  # at one CPU thread


@dataclass(frozen=True)
class CostModel:
    """A family's decode cost: memory and time per decoded pixel, plus attention over the
    latent's tokens (one token per ``token_stride``² pixels) for Transformer families.

    The decoder works on the picture padded to a multiple of ``pad_to`` (the model's
    stride) on each side, so that is what is priced: a header declaring 8×65534 pixels
    makes the hyperprior decode 64×65536."""

    bytes_per_pixel: float
    seconds_per_pixel: float
    token_stride: int = 0
    seconds_per_token_pair: float = 0.0
    pad_to: int = 1
    tasks: tuple = ()
    """Per analysis task that costs more than the decode, ``(task, bytes_per_pixel,
    seconds_per_pixel)`` added for it (``dicm-lite0``'s detection heads; masks at the
    picture's size for ``segment``)."""

    def __call__(self, height: int, width: int, task: str | None = None) -> DecodeCost:
        height, width = -(-height // self.pad_to) * self.pad_to, -(-width // self.pad_to) * self.pad_to
        pixels = height * width
        extra = {t: (b, sec) for t, b, sec in self.tasks}.get(task, (0.0, 0.0))
        seconds = (self.seconds_per_pixel + extra[1]) * pixels
        if self.token_stride:
            tokens = -(-height // self.token_stride) * -(-width // self.token_stride)
            seconds += self.seconds_per_token_pair * tokens * tokens
        return DecodeCost((self.bytes_per_pixel + extra[0]) * pixels, seconds)


def machine_memory() -> int:
    """Physical memory in bytes (8 GiB where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 8 << 30


@dataclass(frozen=True)
class Limits:
    """Decode limits; ``None`` in a field means no limit of that kind."""

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_memory: int | None = None  # filled in by :func:`resolve`: half the machine's memory
    max_seconds: float | None = DEFAULT_MAX_SECONDS


def resolve(limits: Limits | None = None, max_pixels: int | None = None) -> Limits:
    """``limits`` (default :class:`Limits`) with ``max_pixels`` if given (0: no pixel limit)
    and the memory limit filled in."""
    limits = limits or Limits()
    if max_pixels is not None:
        if max_pixels < 0:
            raise IcmError(f"max_pixels must be >= 0 (0: no limit), not {max_pixels}")
        limits = replace(limits, max_pixels=max_pixels or None)
    if limits.max_memory is None:
        limits = replace(limits, max_memory=machine_memory() // 2)
    return limits


def _size(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def _duration(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.0f} min"
    return f"{s:.1f} s"


def check(model_name: str, cost_model, height: int, width: int, limits: Limits, task: str | None = None) -> DecodeCost:
    """Refuse (:class:`LimitError`) a decode of ``height × width`` (and ``task``, where it
    costs more) that ``limits`` do not allow.

    Returns the estimated cost where allowed."""
    pixels = height * width
    cost = cost_model(height, width, task) if cost_model is not None else DecodeCost(0.0, 0.0)
    what = "decoding it" if task is None or cost_model is None or task not in {t for t, *_ in cost_model.tasks} \
        else f"decoding it for {task}"
    needs = f"{what} would need about {_size(cost.memory_bytes)} and {_duration(cost.seconds)} of CPU"
    if limits.max_pixels is not None and pixels > limits.max_pixels:
        raise LimitError(f"the file declares {width}x{height} pixels ({pixels / 1e6:.1f} Mpx), more than the limit "
                         f"of {limits.max_pixels / 1e6:.1f} Mpx ({needs}); raise it with --max-pixels "
                         f"(max_pixels=) if you trust the file")
    if limits.max_memory is not None and cost.memory_bytes > limits.max_memory:
        raise LimitError(f"{model_name} at {width}x{height}: {needs}, more memory than the limit of "
                         f"{_size(limits.max_memory)} (half of this machine's)")
    if limits.max_seconds is not None and cost.seconds > limits.max_seconds:
        raise LimitError(f"{model_name} at {width}x{height}: {needs}, over the limit of "
                         f"{_duration(limits.max_seconds)}; raise it with --max-seconds (Limits(max_seconds=)) "
                         "if you trust the file")
    return cost
