"""What a file's header decides, before any model is built or torch imported.

:func:`read` and :func:`parse` give a parsed ``.icm`` file (its retired model id
renumbered to today's); :func:`check_decode` and :func:`check_analyze` refuse,
from the header and the registry's facts alone, every file that cannot be
decoded or analysed: an unknown model id or quality, a model without a pixel
decoder or without the task asked for, and a decode that the limits do not
allow (:mod:`icm.limits`).  Truncated, corrupted and foreign files are refused
by the parser (:mod:`icm.bitstream`).

This module imports neither torch nor any family's code, so that ``icm info``
and these refusals answer at once; :mod:`icm.codec` runs the same checks before
it builds a model, and re-exports :func:`read`, :func:`parse` and
:func:`check_limits`.
"""

from __future__ import annotations

import dataclasses
import os

from . import bitstream
from .errors import BitstreamError, IcmError
from .limits import DecodeCost, Limits
from .limits import check as limits_check
from .limits import resolve as resolve_limits
from .models import _registry
from .models._registry import ModelInfo, current_id, model_info_by_id
from .tasks import DETECTION_TASKS


def read(path: str | os.PathLike) -> bitstream.IcmFile:
    """Read and parse an ``.icm`` file (raises :class:`IcmError` for a missing file)."""
    try:
        with open(path, "rb") as f:
            data = f.read(bitstream.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise IcmError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise IcmError(f"{path} is a directory, not an .icm file") from None
    if len(data) > bitstream.MAX_FILE_BYTES:
        raise BitstreamError(f"{path} is larger than any .icm file this icm writes")
    return parse(data)


def parse(data: bytes | bitstream.IcmFile) -> bitstream.IcmFile:
    """Parse ``.icm`` bytes (:func:`icm.bitstream.unpack`), with a retired model id
    and its quality renumbered to today's (the stored header kept as ``written_as``)."""
    f = data if isinstance(data, bitstream.IcmFile) else bitstream.unpack(data)
    model_id, quality = current_id(f.header.model_id, f.header.quality)
    if (model_id, quality) == (f.header.model_id, f.header.quality):
        return f
    header = dataclasses.replace(f.header, model_id=model_id, quality=quality)
    return dataclasses.replace(f, header=header, written_as=f.header)


def model_of(header: bitstream.Header) -> ModelInfo:
    """The registered model that wrote ``header``.

    Raises:
        BitstreamError: an unknown model id, or a quality the model does not have.
    """
    info = model_info_by_id(header.model_id)
    if info is None:
        raise BitstreamError(f"unknown model id {header.model_id} in .icm header")
    if header.quality not in info.qualities:
        raise BitstreamError(f"model {info.name!r} has no quality {header.quality}")
    return info


def check_limits(f: bitstream.IcmFile, max_pixels: int | None = None, limits: Limits | None = None,
                 task: str | None = None) -> DecodeCost:
    """Price a parsed file's decode (and ``task``, where it costs more) from its header and
    refuse it (:class:`icm.limits.LimitError`) beyond ``limits`` (default
    :class:`icm.limits.Limits`; ``max_pixels`` overrides its pixel limit, 0 for none).
    Returns the estimated :class:`icm.limits.DecodeCost`."""
    info = model_info_by_id(f.header.model_id)
    name = info.name if info is not None else f"model id {f.header.model_id}"
    return limits_check(name, info.cost if info is not None else None, f.header.height, f.header.width,
                        resolve_limits(limits, max_pixels), task)


def check_decode(f: bitstream.IcmFile, pixels: bool = True, max_pixels: int | None = None,
                 limits: Limits | None = None) -> ModelInfo:
    """Refuse from its header a file that cannot be decoded (with ``pixels``, to pixels).

    Raises:
        IcmError: its model has no pixel decoder and ``pixels`` is asked for.
        LimitError: the header declares more than the limits allow.
        BitstreamError: an unknown model id or quality.
    """
    info = model_info_by_id(f.header.model_id)
    if pixels and info is not None and not info.pixel_decoder:
        raise IcmError(f"model {info.name!r} carries no pixel decoder; decode with pixels=False, "
                       "or analyze the file")
    check_limits(f, max_pixels, limits)
    return model_of(f.header)


def check_analyze(f: bitstream.IcmFile, task: str | None = None, max_pixels: int | None = None,
                  limits: Limits | None = None) -> ModelInfo:
    """Refuse from its header a file that cannot be analysed for ``task`` (default: its
    model's first task).  ``detect`` and ``segment`` run the detection heads that ship for
    the model's family (:func:`icm.models._registry.heads_tasks`).

    Raises:
        IcmError: its model has no analysis tasks, or not ``task``.
        LimitError: the header declares more than the limits allow.
        BitstreamError: an unknown model id or quality.
    """
    info = model_info_by_id(f.header.model_id)
    if info is not None and not info.tasks:
        raise IcmError(f"model {info.name!r} has no analysis tasks; use icm decompress")
    if info is not None and task is not None and task not in info.tasks:
        heads = _registry.heads_tasks(info.name) if task in DETECTION_TASKS else ()
        if "detect" in heads and task not in heads:
            raise IcmError(f"the shipped {info.name} heads detect boxes only; they cannot run task {task!r}")
        if task not in heads:
            raise IcmError(f"model {info.name!r} does not run task {task!r} from its bitstream "
                           f"(its tasks: {', '.join(info.tasks + heads)})")
    check_limits(f, max_pixels, limits, task)
    return model_of(f.header)
