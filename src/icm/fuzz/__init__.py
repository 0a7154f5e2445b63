"""Fuzz targets of icm's parsers, run by a coverage-guided fuzzer (Atheris, libFuzzer's
engine for Python: ``pip install 'icm[fuzz]'``).

``python -m icm.fuzz [TARGET…] --seconds S`` runs each target for ``S`` seconds on a
corpus folder (seeded with valid files from :mod:`icm.fuzz.writers` on first use) and
fails on the first input that breaks the target's contract, writing it beside the
corpus (``crash-<sha1>``).  Minimise a finding, fix it, and commit it under
``tests/fuzz_regressions/<target>/``: the default test run feeds every file there
through :func:`check` (``tests/test_fuzz_regressions.py``).

The contract every target checks: the parser either answers or raises icm's one error
type (:class:`icm.errors.IcmError`); any other exception is a finding, as is running
past libFuzzer's ``-timeout`` or its ``-rss_limit_mb`` memory limit.  The ``.icm``
side's targets (:mod:`icm.fuzz.decoders`: ``bitstream``, ``codec-<family>``,
``service``) also check their answers (finite numbers, a decode within its priced
time and memory, no 500) and mutate with a structure-aware mutator
(:mod:`icm.fuzz.mutate`: valid header and CRC, mutated sections).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from . import decoders


def _rcc(data: bytes) -> None:
    from ..pool.containers import rcc_files

    for _ in rcc_files(data):
        pass


def _pzl(data: bytes) -> None:
    from ..pool.containers import pzl_photo, read_pzl

    read_pzl(data)
    pzl_photo(data)


def _deb(data: bytes) -> None:
    from ..pool.containers import deb_members

    for _ in deb_members(data):
        pass


def _tfjs(data: bytes) -> None:
    from ..teachers.tfjs import read_framed

    model = read_framed(data)
    for _ in model.describe():
        pass


ICM_TARGETS: tuple[str, ...] = ("bitstream", *(f"codec-{f}" for f in decoders.shipped_families()), "service")
"""The ``.icm`` side's targets (structure-aware mutation, torch loaded in their process)."""

TARGETS: dict[str, Callable[[bytes], None]] = {
    "rcc": _rcc, "pzl": _pzl, "deb": _deb, "tfjs": _tfjs, "bitstream": decoders.bitstream_target,
    **{t: functools.partial(decoders.codec_target, t.removeprefix("codec-")) for t in ICM_TARGETS if t.startswith("codec-")},
    "service": decoders.service_target}
"""Target name → the parse it fuzzes (one per reader of untrusted bytes)."""


def check(target: str, data: bytes) -> None:
    """Run ``target`` on ``data`` under the contract: :class:`IcmError` is an answer; any
    other exception propagates (the fuzzer reports it as a finding)."""
    from ..errors import IcmError

    try:
        TARGETS[target](data)
    except IcmError:
        pass


def seeds(target: str) -> list[bytes]:
    """Valid inputs of a target, to start its corpus from."""
    from . import writers

    if target in ICM_TARGETS:
        return decoders.seeds(target)
    if target == "rcc":
        tree = {"a.txt": b"plain", "dir": {"b.bin": writers.Zipped(bytes(range(256)) * 4), "c": {"d.jpg": b"x"}}}
        return [writers.make_rcc(tree, version=v) for v in (1, 2, 3)]
    if target == "pzl":
        from PIL import Image

        atlas = writers._encoded(Image.new("RGB", (96, 96), (200, 80, 40)), "JPEG")
        return [writers.make_pzl(atlas, box=(0, 0, 64, 48)), writers.make_pzl(atlas, box=(8, 8, 32, 32), with_thumb=False)]
    if target == "deb":
        files = {"usr/share/doc/pkg/copyright": b"Format: x\n", "usr/share/pkg/a.jpg": b"A" * 33}
        return [writers.make_deb(files)]
    if target == "tfjs":
        import numpy as np

        from ..teachers.tfjs import frame, write_graph_model

        w = {"kernel": np.linspace(-1, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4),
             "bias": np.arange(4, dtype=np.float32), "perm": np.array([0, 2, 3, 1], np.int32),
             "flag": np.array([True, False]), "empty": np.zeros((0, 3), np.float32)}
        dims = [{"size": "1"}, {"size": "-1"}]
        nodes = [{"name": "x", "op": "Placeholder", "attr": {"shape": {"shape": {"dim": dims}}}},
                 {"name": "conv", "op": "Conv2D", "input": ["x", "kernel"],
                  "attr": {"padding": {"s": "VkFMSUQ="}, "strides": {"list": {"i": ["1", "2", "2", "1"]}},
                           "alpha": {"f": 0.1}, "T": {"type": "DT_FLOAT"}, "b": {"b": True}, "e": {"list": {}}}},
                 {"name": "out", "op": "Add", "input": ["conv:0", "bias", "^perm"]}]
        out = []
        for q, step in (({}, None), ({"kernel": "float16", "bias": "uint8", "perm": "uint16"}, 16)):
            js, shards = write_graph_model(w, nodes, quantize=q, shard_bytes=step)
            out.append(frame(js, list(shards.values())))
        return out
    raise KeyError(target)
