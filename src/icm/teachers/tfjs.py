"""A strict reader of TensorFlow.js graph models: the ``model.json`` (its
``modelTopology``, a TensorFlow ``GraphDef`` in JSON, and its ``weightsManifest``) and
the binary weight shards it names, into NumPy arrays by name — no TensorFlow needed.

The manifest is a list of groups ``{"paths": [shard…], "weights": [spec…]}``; a
group's shards, concatenated in order, hold its weights one after the other, each
``spec`` giving ``name``, ``shape``, ``dtype`` (``float32``, ``int32``, ``bool``) and
optionally ``quantization``: ``{"dtype": "float16"}`` (stored as IEEE half floats) or
``{"dtype": "uint8" | "uint16", "scale", "min"}`` (stored as integers ``q``, meaning
``q · scale + min``).  Read here:

* float weights as ``float32`` (dequantized where quantized), ``int32`` as ``int32``
  (quantized ones rounded, as TF.js does), ``bool`` as ``bool``;
* every size, offset and dtype is checked: a spec's bytes past its group's shards, bytes
  left over after the last spec, an unknown dtype or quantization, a shape that is not
  a list of non-negative integers, a duplicate name, a shard path that leaves the
  model's folder, malformed JSON — each raises :class:`TfjsError` (an
  :class:`icm.errors.IcmError`) naming the problem, before any large allocation.
  Nothing else escapes (the ``tfjs`` fuzz target checks that).

:attr:`GraphModel.nodes` lists the graph's nodes (op, inputs, attributes decoded from
their JSON form) so that a port can be checked against the graph it came from.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..pool.containers import ContainerError

MAX_JSON_BYTES = 64 << 20
"""Largest ``model.json`` read (the NanoDet one is 120 kB)."""
MAX_WEIGHT_BYTES = 1 << 30
"""Largest total of a model's weight shards."""
MAX_ELEMENTS = 1 << 28
"""Most elements one weight may have."""
MAX_RANK = 8

# bytes per element as stored, by dtype (unquantized) and by quantization dtype
_STORED = {"float32": ("<f4", 4), "int32": ("<i4", 4), "bool": ("u1", 1)}
_QUANTIZED = {"float16": ("<f2", 2), "uint8": ("u1", 1), "uint16": ("<u2", 2)}
_DECIMAL = re.compile(r"-?[0-9]{1,19}", re.ASCII)


class TfjsError(ContainerError):
    """A TF.js graph model (its JSON or a weight shard) is malformed, truncated or not what it claims."""


@dataclass(frozen=True)
class WeightSpec:
    """One weight of the manifest, where it lies in its group's concatenated shards."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # what it is: float32, int32 or bool
    stored: str  # how it is stored: float32, int32, bool, float16, uint8 or uint16
    group: int
    offset: int
    nbytes: int
    scale: float | None = None  # uint8/uint16 quantization: value = q * scale + min
    min: float | None = None

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Group:
    paths: tuple[str, ...]
    weights: tuple[WeightSpec, ...]

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self.weights)


@dataclass(frozen=True)
class Node:
    """A node of the graph: its ``op`` (``Conv2D``, ``Const``…), its ``inputs`` as written
    (``name``, ``name:k`` for output k, ``^name`` for a control input) and its ``attrs``
    decoded: strings (``s``) as ``str`` (``bytes`` where not UTF-8), ints, floats, bools,
    dtypes as their enum names (``DT_FLOAT``), shapes as tuples (-1: unknown), lists as
    lists; any other kind of value as the JSON has it."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    attrs: dict = field(default_factory=dict)

    @property
    def input_nodes(self) -> tuple[str, ...]:
        """The names of the nodes whose outputs feed this one (data inputs only)."""
        return tuple(i.split(":", 1)[0] for i in self.inputs if not i.startswith("^"))


@dataclass
class GraphModel:
    """A TF.js graph model read by :func:`read_graph_model`."""

    nodes: tuple[Node, ...]
    weights: dict[str, np.ndarray]
    specs: dict[str, WeightSpec]
    signature: dict
    meta: dict  # format, generatedBy, convertedBy…

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.nodes}

    def node(self, name: str) -> Node:
        try:
            return self._by_name[name]
        except KeyError:
            raise TfjsError(f"the graph has no node {name!r}") from None

    def ops(self, op: str) -> list[Node]:
        """The nodes of one op, in the graph's order."""
        return [n for n in self.nodes if n.op == op]

    def consumers(self, name: str) -> list[Node]:
        """The nodes that take ``name``'s output as a data input."""
        return [n for n in self.nodes if name in n.input_nodes]

    def weight(self, name: str) -> np.ndarray:
        try:
            return self.weights[name]
        except KeyError:
            raise TfjsError(f"the model has no weight {name!r}") from None

    def describe(self) -> Iterator[str]:
        """One line per non-``Const`` node: name, op, inputs (with weight shapes) and attributes."""
        for n in self.nodes:
            if n.op == "Const":
                continue
            ins = ", ".join(i + (f"{list(self.specs[i].shape)}" if i in self.specs else "") for i in n.inputs)
            attrs = {k: v for k, v in n.attrs.items() if k not in ("T", "Tidx", "Tperm", "Tpaddings", "Tshape")}
            yield f"{n.name}: {n.op}({ins}) {attrs if attrs else ''}".rstrip()


# -- the JSON --------------------------------------------------------------------------------------


def _loads(data: bytes, what: str):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TfjsError(f"{what}: expected bytes")
    if len(data) > MAX_JSON_BYTES:
        raise TfjsError(f"{what} is {len(data)} bytes (limit {MAX_JSON_BYTES})")

    def no_constant(c):
        raise TfjsError(f"{what}: {c} is not JSON")

    try:
        return json.loads(bytes(data).decode("utf-8"), parse_constant=no_constant)
    except TfjsError:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise TfjsError(f"{what} is not valid JSON: {str(e)[:200]}") from None


def _int(v, what: str, lo: int = 0, hi: int = 1 << 62, strings: bool = True) -> int:
    """An integer of the JSON: a number, or (proto3 JSON's int64, ``strings``) a decimal string."""
    if isinstance(v, bool) or not isinstance(v, (int, str)) or (isinstance(v, str) and not strings):
        raise TfjsError(f"{what} is {_short(v)}, not an integer")
    if isinstance(v, str):
        if not _DECIMAL.fullmatch(v):
            raise TfjsError(f"{what} is {_short(v)}, not an integer")
        v = int(v)
    if not lo <= v <= hi:
        raise TfjsError(f"{what} is {v}, outside [{lo}, {hi}]")
    return v


def _float(v, what: str) -> float:
    if isinstance(v, str) and v in ("NaN", "Infinity", "-Infinity"):  # proto3 JSON's spelling
        return float(v.replace("Infinity", "inf"))
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TfjsError(f"{what} is {_short(v)}, not a number")
    try:
        return float(v)
    except OverflowError:
        raise TfjsError(f"{what} is too large") from None


def _str(v, what: str, limit: int = 4096) -> str:
    if not isinstance(v, str) or not v or len(v) > limit:
        raise TfjsError(f"{what} is {_short(v)}, not a name")
    return v


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _shard_path(p, what: str) -> str:
    p = _str(p, what, 1024)
    if "\x00" in p or p.startswith(("/", "\\")) or ".." in p.replace("\\", "/").split("/") or ":" in p:
        raise TfjsError(f"{what} {p!r} is not a path inside the model's folder")
    return p


def _attr(v, what: str):
    if not isinstance(v, dict):
        raise TfjsError(f"{what} is {_short(v)}, not an attribute value")
    if not v:
        return None
    if len(v) != 1:  # an AttrValue is a oneof
        raise TfjsError(f"{what} has {len(v)} kinds of value ({', '.join(map(str, v))})")
    (kind, x), = v.items()
    if kind == "s":
        return _bytes_or_str(x, what)
    if kind == "i":
        return _int(x, what, -(1 << 63), (1 << 63) - 1)
    if kind == "f":
        return _float(x, what)
    if kind == "b":
        if not isinstance(x, bool):
            raise TfjsError(f"{what} is {_short(x)}, not a bool")
        return x
    if kind == "type":
        return _str(x, what, 64)
    if kind == "shape":
        return _shape_attr(x, what)
    if kind == "list":
        if not isinstance(x, dict):
            raise TfjsError(f"{what} is {_short(x)}, not a list value")
        out = []
        for k, items in x.items():
            if not isinstance(items, list):
                raise TfjsError(f"{what}.{k} is {_short(items)}, not a list")
            for j, item in enumerate(items):
                out.append(_attr({k: item}, f"{what}.{k}[{j}]") if k in ("s", "i", "f", "b", "type", "shape")
                           else item)
        return out
    return x  # tensor, func, placeholder: kept as the JSON has them


def _bytes_or_str(x, what: str):
    if not isinstance(x, str):
        raise TfjsError(f"{what} is {_short(x)}, not a base64 string")
    try:
        b = base64.b64decode(x, validate=True)
    except (binascii.Error, ValueError):
        raise TfjsError(f"{what} is not valid base64") from None
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b


def _shape_attr(x, what: str):
    if not isinstance(x, dict):
        raise TfjsError(f"{what} is {_short(x)}, not a shape")
    if x.get("unknownRank"):
        return None
    dims = x.get("dim", [])
    if not isinstance(dims, list) or len(dims) > 64:
        raise TfjsError(f"{what}.dim is not a list of dimensions")
    out = []
    for j, d in enumerate(dims):
        if not isinstance(d, dict):
            raise TfjsError(f"{what}.dim[{j}] is {_short(d)}, not a dimension")
        out.append(_int(d.get("size", -1), f"{what}.dim[{j}].size", -1))
    return tuple(out)


def _nodes(topology, what: str = "modelTopology") -> tuple[Node, ...]:
    if not isinstance(topology, dict):
        raise TfjsError(f"{what} is {_short(topology)}, not an object")
    raw = topology.get("node", [])
    if not isinstance(raw, list):
        raise TfjsError(f"{what}.node is not a list")
    nodes, seen = [], set()
    for k, n in enumerate(raw):
        w = f"{what}.node[{k}]"
        if not isinstance(n, dict):
            raise TfjsError(f"{w} is {_short(n)}, not an object")
        name = _str(n.get("name"), f"{w}.name")
        op = _str(n.get("op"), f"{w} ({name}).op", 128)
        if name in seen:
            raise TfjsError(f"the graph has two nodes named {name!r}")
        seen.add(name)
        inputs = n.get("input", [])
        if not isinstance(inputs, list):
            raise TfjsError(f"{w} ({name}).input is not a list")
        inputs = tuple(_str(i, f"{w} ({name}).input[{j}]") for j, i in enumerate(inputs))
        attr = n.get("attr", {})
        if not isinstance(attr, dict):
            raise TfjsError(f"{w} ({name}).attr is not an object")
        attrs = {str(a): _attr(v, f"{name}.attr.{a}") for a, v in attr.items()}
        nodes.append(Node(name, op, inputs, attrs))
    return tuple(nodes)


def _groups(manifest) -> tuple[Group, ...]:
    if not isinstance(manifest, list):
        raise TfjsError(f"weightsManifest is {_short(manifest)}, not a list of groups")
    groups, names, total = [], set(), 0
    for g, group in enumerate(manifest):
        w = f"weightsManifest[{g}]"
        if not isinstance(group, dict):
            raise TfjsError(f"{w} is {_short(group)}, not an object")
        paths, specs = group.get("paths"), group.get("weights")
        if not isinstance(paths, list) or not isinstance(specs, list):
            raise TfjsError(f"{w} needs a list of 'paths' and a list of 'weights'")
        if specs and not paths:
            raise TfjsError(f"{w} has weights but no shard paths")
        paths = tuple(_shard_path(p, f"{w}.paths[{j}]") for j, p in enumerate(paths))
        out, offset = [], 0
        for k, s in enumerate(specs):
            spec = _spec(s, f"{w}.weights[{k}]", g, offset)
            if spec.name in names:
                raise TfjsError(f"the manifest names the weight {spec.name!r} twice")
            names.add(spec.name)
            offset += spec.nbytes
            total += spec.nbytes
            if total > MAX_WEIGHT_BYTES:
                raise TfjsError(f"the manifest's weights need more than {MAX_WEIGHT_BYTES} bytes")
            out.append(spec)
        groups.append(Group(paths, tuple(out)))
    return tuple(groups)


def _spec(s, what: str, group: int, offset: int) -> WeightSpec:
    if not isinstance(s, dict):
        raise TfjsError(f"{what} is {_short(s)}, not an object")
    name = _str(s.get("name"), f"{what}.name")
    what = f"weight {name!r}"
    shape = s.get("shape")
    if not isinstance(shape, list) or len(shape) > MAX_RANK:
        raise TfjsError(f"{what}: shape {_short(shape)} is not a list of at most {MAX_RANK} dimensions")
    shape = tuple(_int(d, f"{what}: a dimension", 0, 1 << 31, strings=False) for d in shape)
    n = math.prod(shape)
    if n > MAX_ELEMENTS:
        raise TfjsError(f"{what}: shape {list(shape)} has {n} elements (limit {MAX_ELEMENTS})")
    dtype = s.get("dtype")
    if not isinstance(dtype, str) or dtype not in _STORED:  # a list or an object is no key of _STORED
        raise TfjsError(f"{what}: dtype {_short(dtype)} is not supported (float32, int32, bool are)")
    q = s.get("quantization")
    if q is None:
        return WeightSpec(name, shape, dtype, dtype, group, offset, n * _STORED[dtype][1])
    if not isinstance(q, dict):
        raise TfjsError(f"{what}: quantization is {_short(q)}, not an object")
    qd = q.get("dtype")
    if not isinstance(qd, str) or qd not in _QUANTIZED:
        raise TfjsError(f"{what}: quantization dtype {_short(qd)} is not known (float16, uint8, uint16 are)")
    if dtype == "bool" or (qd == "float16" and dtype != "float32"):
        raise TfjsError(f"{what}: a {dtype} weight cannot be quantized as {qd}")
    orig = q.get("original_dtype", dtype)
    if orig != dtype:
        raise TfjsError(f"{what}: quantization.original_dtype {_short(orig)} is not its dtype {dtype}")
    scale = lo = None
    if qd != "float16":
        if "scale" not in q or "min" not in q:
            raise TfjsError(f"{what}: {qd} quantization needs 'scale' and 'min'")
        scale, lo = _float(q["scale"], f"{what}: scale"), _float(q["min"], f"{what}: min")
        if not (math.isfinite(scale) and math.isfinite(lo)):
            raise TfjsError(f"{what}: quantization scale and min must be finite")
    return WeightSpec(name, shape, dtype, qd, group, offset, n * _QUANTIZED[qd][1], scale, lo)


def _decode(spec: WeightSpec, buf: bytes) -> np.ndarray:
    if spec.size == 0:
        return np.zeros(spec.shape, dtype=np.dtype(spec.dtype))
    if spec.stored in _QUANTIZED:
        raw = np.frombuffer(buf, dtype=_QUANTIZED[spec.stored][0], count=spec.size, offset=spec.offset)
        if spec.stored == "float16":
            out = raw.astype(np.float32)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                val = raw.astype(np.float64) * spec.scale + spec.min
                if spec.dtype == "int32":
                    if not np.isfinite(val).all() or (np.abs(val) > 2 ** 31 - 1).any():
                        raise TfjsError(f"weight {spec.name!r}: dequantized values do not fit int32")
                    out = np.round(val).astype(np.int32)
                else:
                    out = val.astype(np.float32)
    else:
        raw = np.frombuffer(buf, dtype=_STORED[spec.stored][0], count=spec.size, offset=spec.offset)
        out = (raw != 0) if spec.dtype == "bool" else raw.astype(np.dtype(spec.dtype))  # native order, a copy
    return out.reshape(spec.shape)


# -- the model -------------------------------------------------------------------------------------


def parse_model_json(data: bytes) -> tuple[dict, tuple[Node, ...], tuple[Group, ...]]:
    """``(meta, nodes, groups)`` of a ``model.json``: ``meta`` holds ``format``,
    ``generatedBy``, ``convertedBy`` and ``signature`` as found."""
    doc = _loads(data, "model.json")
    if not isinstance(doc, dict):
        raise TfjsError("model.json is not a JSON object")
    fmt = doc.get("format", "graph-model")
    if fmt != "graph-model":
        raise TfjsError(f"model.json is a {_short(fmt)}, not a TF.js graph-model")
    if "modelTopology" not in doc or "weightsManifest" not in doc:
        raise TfjsError("model.json needs 'modelTopology' and 'weightsManifest'")
    nodes = _nodes(doc["modelTopology"])
    groups = _groups(doc["weightsManifest"])
    sig = doc.get("signature", {})
    meta = {k: doc[k] for k in ("format", "generatedBy", "convertedBy") if isinstance(doc.get(k), str)}
    meta["signature"] = sig if isinstance(sig, dict) else {}
    return meta, nodes, groups


def read_weights(groups: tuple[Group, ...], shard: Callable[[str, int], bytes]) -> dict[str, np.ndarray]:
    """The weights of ``groups`` by name; ``shard(path, limit)`` returns a shard's bytes
    (or raises :class:`TfjsError`), reading no more than ``limit`` bytes.  A group's
    shards together must hold exactly its weights' bytes."""
    out: dict[str, np.ndarray] = {}
    for g, group in enumerate(groups):
        need = group.nbytes
        parts, have = [], 0
        for p in group.paths:
            b = shard(p, need - have + 1)
            if not isinstance(b, (bytes, bytearray, memoryview)):
                raise TfjsError(f"shard {p!r} did not read as bytes")
            have += len(b)
            if have > need:
                raise TfjsError(f"weightsManifest[{g}]: the shards hold more bytes than its weights need ({need}): "
                                f"{p!r} is not the shard the manifest describes")
            parts.append(bytes(b))
        if have < need:
            last = next((w for w in group.weights if w.offset + w.nbytes > have), None)
            raise TfjsError(f"weightsManifest[{g}]: the shards hold {have} bytes, the weights need {need}"
                            + (f" (weight {last.name!r} at byte {last.offset} runs past the end)" if last else ""))
        buf = b"".join(parts)
        for w in group.weights:
            out[w.name] = _decode(w, buf)
    return out


def read_graph_model(model_json: bytes, shard: Callable[[str, int], bytes]) -> GraphModel:
    """A graph model from its JSON and a reader of its shards (see :func:`read_weights`)."""
    meta, nodes, groups = parse_model_json(model_json)
    weights = read_weights(groups, shard)
    specs = {w.name: w for g in groups for w in g.weights}
    sig = meta.pop("signature")
    return GraphModel(nodes, weights, specs, sig, meta)


def _read_limited(path: Path, limit: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise TfjsError(f"{what} {path} is {size} bytes, more than expected ({limit - 1})")
        return path.read_bytes()
    except TfjsError:
        raise
    except OSError as e:
        raise TfjsError(f"cannot read {what} {path}: {e.strerror or e}") from None


def load_graph_model(path: str | os.PathLike) -> GraphModel:
    """A graph model from its ``model.json`` on disk; the shards are read from the same folder."""
    path = Path(path)
    data = _read_limited(path, MAX_JSON_BYTES + 1, "model JSON")
    folder = path.parent
    return read_graph_model(data, lambda p, limit: _read_limited(folder / p, limit, "weight shard"))


# -- writing (tests and fuzz seeds) and a one-buffer framing (the fuzz target) ----------------------


def write_graph_model(weights: dict[str, np.ndarray], nodes: list[dict] | None = None,
                      quantize: dict[str, str] | None = None, shard_bytes: int | None = None,
                      path_prefix: str = "group1-shard") -> tuple[bytes, dict[str, bytes]]:
    """A TF.js graph model of ``weights`` (float32, int32 or bool arrays), as the TF.js
    converter writes one: ``(model.json bytes, {shard path: bytes})``.  ``quantize`` maps
    a weight's name to ``float16``, ``uint8`` or ``uint16``; ``shard_bytes`` splits the
    weights' bytes into shards of that size; ``nodes`` is the graph (JSON node dicts;
    by default a ``Const`` per weight)."""
    quantize = quantize or {}
    specs, parts = [], []
    for name, a in weights.items():
        a = np.asarray(a)
        dtype = {"f": "float32", "i": "int32", "u": "int32", "b": "bool"}[a.dtype.kind]
        spec = {"name": name, "shape": list(a.shape), "dtype": dtype}
        q = quantize.get(name)
        if q == "float16":
            parts.append(a.astype("<f2").tobytes())
            spec["quantization"] = {"dtype": "float16", "original_dtype": dtype}
        elif q in ("uint8", "uint16"):
            top = 255 if q == "uint8" else 65535
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            scale = (hi - lo) / top if hi > lo else 1.0
            q_values = np.round((a.astype(np.float64) - lo) / scale)
            parts.append(q_values.astype("u1" if q == "uint8" else "<u2").tobytes())
            spec["quantization"] = {"dtype": q, "scale": scale, "min": lo, "original_dtype": dtype}
        elif q is None:
            parts.append(a.astype({"float32": "<f4", "int32": "<i4", "bool": "u1"}[dtype]).tobytes())
        else:
            raise ValueError(f"unknown quantization {q}")
        specs.append(spec)
    blob = b"".join(parts)
    step = shard_bytes or max(1, len(blob))
    chunks = [blob[i:i + step] for i in range(0, len(blob), step)] or [b""]
    shards = {f"{path_prefix}{k + 1}of{len(chunks)}.bin": c for k, c in enumerate(chunks)}
    if nodes is None:
        nodes = [{"name": n, "op": "Const", "attr": {"dtype": {"type": "DT_FLOAT"}}} for n in weights]
    doc = {"format": "graph-model", "generatedBy": "icm", "convertedBy": "icm",
           "modelTopology": {"node": nodes, "versions": {"producer": 1}},
           "weightsManifest": [{"paths": list(shards), "weights": specs}]}
    return json.dumps(doc).encode(), shards


def frame(model_json: bytes, shards: list[bytes]) -> bytes:
    """One buffer holding a model: the JSON's length (4 bytes, little-endian), the JSON,
    then each shard as its length and bytes, in the order the manifest names them."""
    out = [len(model_json).to_bytes(4, "little"), model_json]
    for s in shards:
        out += [len(s).to_bytes(4, "little"), s]
    return b"".join(out)


def read_framed(data: bytes) -> GraphModel:
    """A model from a buffer :func:`frame` made (the ``tfjs`` fuzz target's input): the
    manifest's shard paths take the framed shards in the order they are first named."""
    def take(at: int, what: str) -> tuple[bytes, int]:
        if at + 4 > len(data):
            raise TfjsError(f"framed model: {what}'s length is past the end")
        n = int.from_bytes(data[at:at + 4], "little")
        if at + 4 + n > len(data):
            raise TfjsError(f"framed model: {what} ({n} bytes) runs past the end")
        return data[at + 4:at + 4 + n], at + 4 + n

    model_json, at = take(0, "the JSON")
    framed = []
    while at < len(data):
        s, at = take(at, f"shard {len(framed)}")
        framed.append(s)
    given: dict[str, bytes] = {}

    def shard(path: str, limit: int) -> bytes:
        if path not in given:
            if len(given) >= len(framed):
                raise TfjsError(f"shard {path!r} is missing")
            given[path] = framed[len(given)]
        if len(given[path]) > limit:
            raise TfjsError(f"shard {path!r} is {len(given[path])} bytes, more than expected ({limit - 1})")
        return given[path]

    return read_graph_model(model_json, shard)
