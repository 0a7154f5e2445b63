"""The sender: an 8-bit RGB image in, the bytes of an ``.icm`` file out.

It runs what ``icm compress`` runs, from the files ``icm export-onnx`` writes
(``icm_edge/models``): ONNX graphs for the float networks, NumPy for the global
FFT filter of ``dicm-lite0`` and for the fixed-point hyper-synthesis whose
integers pick each symbol's table, ``constriction`` for the range coder, and
the container writer of ``icm.bitstream``::

    image ─▶ [luma] ─▶ pad ─▶ [head ─▶ RE] ─▶ g_a ─▶ y ─────────────▶ round(y − μ) ─▶ coder ─┐
                                                  └─▶ h_a ─▶ round ─▶ ẑ ─▶ h_s (fixed point) ─▶ (σ → table, μ)
                                                                      └─▶ coder ─────────────────────────┤
                                                                                          header + CRC ◀─┘
"""

from __future__ import annotations

import functools
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np

from . import bitstream, coder
from .errors import IcmError
from .fixed_point import FixedPointNet
from .global_filter import global_filter

FORMAT = 1
"""The layout of ``icm export-onnx`` this sender reads."""
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def models_dir() -> Path:
    """Where the shipped senders lie (``ICM_EDGE_MODELS`` overrides it)."""
    env = os.environ.get("ICM_EDGE_MODELS")
    return Path(env) if env else Path(str(resources.files("icm_edge").joinpath("models")))


def available() -> dict[str, list[int]]:
    """``{model: [qualities]}`` of the shipped senders."""
    out: dict[str, list[int]] = {}
    for p in sorted(models_dir().glob("*.json")):
        name, _, q = p.stem.rpartition("-q")
        if name and q.isdigit():
            out.setdefault(name, []).append(int(q))
    return {k: sorted(v) for k, v in sorted(out.items())}


def qualities(model: str) -> list[int]:
    """The shipped qualities of ``model``."""
    have = available()
    if model not in have:
        raise IcmError(f"unknown model {model!r}; this icm-edge codes {', '.join(have) or 'nothing'}")
    return have[model]


def check_quality(model: str, quality: int | None) -> int:
    """``quality``, or the default (the highest, as ``icm compress`` takes), validated before any work."""
    shipped = qualities(model)
    if quality is None:
        return max(shipped)
    if quality not in shipped:
        raise IcmError(f"-q {quality}: model {model!r} has qualities {', '.join(map(str, shipped))}")
    return quality


class Sender:
    """One model at one quality, its graphs loaded.

    Args:
        desc: the ``NAME-qQ.json`` that ``icm export-onnx`` wrote.
        threads: onnxruntime's intra-op threads (default 1: the same files at any load,
            and one image of a few hundred thousand pixels gains little from more).
    """

    def __init__(self, desc: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        desc = Path(desc)
        self.desc = json.loads(desc.read_text())
        if self.desc.get("format") != FORMAT:
            raise IcmError(f"{desc}: sender format {self.desc.get('format')}, this icm-edge reads {FORMAT}")
        root = desc.parent
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or 1)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3

        def session(name: str):
            return ort.InferenceSession(str(root / name), sess_options=opts, providers=["CPUExecutionProvider"])

        g = self.desc["graphs"]
        self.model, self.quality = self.desc["model"], int(self.desc["quality"])
        self.model_id, self.stride = int(self.desc["model_id"]), int(self.desc["stride"])
        self.in_channels = int(self.desc["in_channels"])
        self.input_size = tuple(self.desc["input_size"]) if self.desc.get("input_size") else None
        self.head = session(g["head"]) if "head" in g else None
        self.re = session(g["re"]) if "re" in g else None
        self.g_a = [session(n) for n in g["g_a"]]
        self.h_a = session(g["h_a"]) if "h_a" in g else None
        with np.load(root / self.desc["tables"]) as t:
            arrays = {k: t[k] for k in t.files}
        self.filters = [arrays[f"g_a.filter.{i}"] for i in range(len(self.g_a) - 1)]
        self.y_tables = _tables(arrays, "y")
        self.y_models = self.y_tables.models()
        if self.desc["entropy"] == "hyperprior":
            self.z_tables = _tables(arrays, "z")
            self.z_models = self.z_tables.models()
            self.h_s = FixedPointNet.from_arrays(arrays, "h_s.")
            self.thresholds = arrays["y.thresholds"].astype(np.float64)
        elif self.desc["entropy"] != "factorized":
            raise IcmError(f"{desc}: unknown entropy model {self.desc['entropy']!r}")

    # -- the steps ---------------------------------------------------------------------------------------------

    def model_input(self, rgb: np.ndarray) -> np.ndarray:
        """``uint8 (H, W, 3)`` → the model's input ``(1, C, H, W)`` in ``[0, 1]``, padded
        (edge replication) to a multiple of the stride; greyscale models take BT.601 luma."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise IcmError(f"expected uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
        x = (rgb.transpose(2, 0, 1)[None].astype(np.float32) / np.float32(255.0))
        if self.in_channels == 1:
            x = (x[:, 0] * _LUMA[0] + x[:, 1] * _LUMA[1] + x[:, 2] * _LUMA[2])[:, None]
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        return np.ascontiguousarray(x, dtype=np.float32)

    def analysis(self, x: np.ndarray) -> np.ndarray:
        """Padded input → ``y`` (float32)."""
        f = x
        if self.head is not None:
            f = self.head.run(None, {"x": x})[0]
        if self.re is not None:
            f = self.re.run(None, {"f": f})[0]
        out = self.g_a[0].run(None, {"f": f})
        for graph, weight in zip(self.g_a[1:], self.filters):
            xs, p, a, b = out
            out = graph.run(None, {"x": xs, "p": p, "a": a, "b": global_filter(b, weight)})
        return out[0]

    def encode(self, rgb: np.ndarray) -> bytes:
        """The ``.icm`` bytes of one ``uint8 (H, W, 3)`` RGB image."""
        h, w = np.asarray(rgb).shape[:2]
        if self.input_size is not None and (h, w) != self.input_size:
            raise IcmError(f"{self.model} codes {self.input_size[1]}x{self.input_size[0]} images "
                           f"(what it was trained on); this one is {w}x{h}: resize it first")
        y = self.analysis(self.model_input(rgb))
        if self.h_a is None:
            sym = np.rint(y)[0].astype(np.int64)
            sections = [coder.encode(sym, _channel_index(sym.shape), self.y_tables, self.y_models)]
        else:
            z = np.rint(self.h_a.run(None, {"y": y})[0])
            z_sym = z[0].astype(np.int64)
            z_bytes = coder.encode(z_sym, _channel_index(z_sym.shape), self.z_tables, self.z_models)
            scales, means = np.split(self.h_s(z), 2, axis=1)
            index = np.searchsorted(self.thresholds, scales[0], side="right")
            mu = (means * 2.0**-self.h_s.act_bits).astype(np.float32)
            sym = np.rint(y - mu)[0].astype(np.int64)
            sections = [coder.encode(sym, index, self.y_tables, self.y_models), z_bytes]
        return bitstream.pack(bitstream.Header(self.model_id, self.quality, int(h), int(w)), sections)


def _tables(arrays: dict, prefix: str) -> coder.CodingTables:
    return coder.CodingTables.from_packed(arrays[f"{prefix}.freqs"].astype(np.int32),
                                          arrays[f"{prefix}.lengths"].astype(np.int32),
                                          arrays[f"{prefix}.offsets"].astype(np.int32))


def _channel_index(shape: tuple) -> np.ndarray:
    return np.broadcast_to(np.arange(shape[0])[:, None, None], shape)


@functools.lru_cache(maxsize=8)
def sender(model: str, quality: int | None = None, threads: int | None = None) -> Sender:
    """The shipped sender of ``model`` at ``quality`` (default: the highest), loaded once per process."""
    quality = check_quality(model, quality)
    return Sender(models_dir() / f"{model}-q{quality}.json", threads)
