"""``icm export-onnx``: the sender of a shipped model as ONNX graphs and integer tables.

What ``icm compress`` runs to turn an image into a file, split into what a
float runtime may compute and what must be exact::

    image ─▶ pad ─▶ [dicm: head ─▶ RE] ─▶ g_a ─▶ y ──────────────▶ round(y − μ) ─▶ range coder ─▶ .icm
                        ONNX graphs         │                        ▲    (Gaussian tables, index from σ)
                                            └─▶ h_a ─▶ round ─▶ ẑ ─▶ h_s in fixed point (NumPy) ─▶ (σ, μ)
                                                ONNX               └─▶ range coder (factorized tables)

* ONNX graphs (dynamic batch, height and width): ``g_a`` and ``h_a`` for the
  hyperprior models (``hyperprior``, ``bai2022-fmnist``); for ``dicm-lite0`` the
  backbone head (one graph for every quality: the ImageNet head is frozen),
  the redundancy-elimination module (rounding included) and ``g_a``, cut in
  two around the global FFT filter of its last HorNet block, which runs in
  NumPy between the two graphs.
* An ``.npz`` of integers: the coding tables exactly as the checkpoint stores
  them, the scale-level thresholds, the fixed-point hyper-synthesis
  (:mod:`icm.layers.fixed_point_numpy`; its output decides every symbol's table
  and must be the decoder's integers), and the global filters' weights.
* A JSON description of the sender, which ``icm-edge`` reads.

Only the rounding of ``y`` (and of ``ẑ`` and the RE bottleneck) sees float
results, so a sender built from these files writes files that any ``icm``
decodes; where the runtime's last bits move a value across a rounding
boundary its file differs from ``icm compress``'s in that symbol (docs/edge.md
says how often and what it costs).

Needs the ``onnx`` extra (``pip install 'icm[onnx]'``).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import IcmError
from .layers.global_filter_numpy import global_filter

FORMAT = 1
"""Version of the exported layout (the JSON's ``format``); icm-edge refuses others."""
OPSET = 17
EXPORTABLE = ("hyperprior", "bai2022-fmnist", "dicm-lite0", "dicm-lite0-s8", "dicm-lite0-s8-cutmix")
"""Models with shipped weights whose senders export."""
_DYNAMIC = {0: "batch", 2: "height", 3: "width"}


def _require() -> None:
    from . import extras

    extras.require("icm export-onnx", "onnx", "onnx", "onnxruntime")


# -- the sender's parts as modules with plain tensor inputs and outputs -------------------------------------

def _modules():
    """The wrapper modules (defined once torch is imported)."""
    import torch
    from torch import nn

    class Chain(nn.Module):
        """Modules in sequence; a module may take or give a tuple (the parts around a global filter)."""

        def __init__(self, parts):
            super().__init__()
            self.parts = nn.ModuleList(parts)

        def forward(self, *x):
            out = x if len(x) > 1 else x[0]
            for m in self.parts:
                out = m(*out) if isinstance(out, tuple) else m(out)
            return out

    class Standardise(nn.Module):
        def __init__(self, re):
            super().__init__()
            self.re = re

        def forward(self, f):
            return self.re.standardise(f)

    class Redundancy(nn.Module):
        """The RE module as the sender runs it in eval mode: its bottleneck rounded."""

        def __init__(self, re):
            super().__init__()
            self.re = re

        def forward(self, f):
            b = torch.round(self.re.encoder(self.re.standardise(f)))
            return self.re.unstandardise(self.re.decoder(b))

    class HorBefore(nn.Module):
        """A HorNet block with a global filter, up to the FFT: ``(x, p, local gates, FFT input)``."""

        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            gn = self.block.gnconv
            p, g = gn.proj_in(self.block.norm1(x)).split([gn.dims[0], sum(gn.dims)], dim=1)
            a, b = gn.gate.norm_in(g).chunk(2, dim=1)
            return x, p, gn.gate.local(a), b

    class HorAfter(nn.Module):
        """The rest of that block, from the filtered half (:func:`global_filter`)."""

        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x, p, a, b):
            blk, gn = self.block, self.block.gnconv
            gates = (gn.gate.norm_out(torch.cat([a, b], dim=1)) * gn.scale).split(gn.dims, dim=1)
            p = p * gates[0]
            for widen, gate in zip(gn.widen, gates[1:]):
                p = widen(p) * gate
            x = x + blk.gamma1 * gn.proj_out(p)
            return x + blk.gamma2 * blk.mlp(blk.norm2(x))

    return Chain, Standardise, Redundancy, HorBefore, HorAfter


def _g_a_stages(model):
    """``g_a`` as a list of modules (each becomes one graph) and the global filters between them."""
    from .layers.gnconv import GlobalLocalFilter, HorBlock

    Chain, Standardise, _, HorBefore, HorAfter = _modules()
    stages, filters = [[]], []
    if hasattr(model, "re"):
        stages[0].append(Standardise(model.re))
    for m in model.g_a:
        if isinstance(m, HorBlock) and isinstance(m.gnconv.gate, GlobalLocalFilter):
            stages[-1].append(HorBefore(m))
            filters.append(m.gnconv.gate.weight.detach().cpu().numpy().astype(np.float32))
            stages.append([HorAfter(m)])
        else:
            stages[-1].append(m)
    return [Chain(s) for s in stages], filters


# -- writing --------------------------------------------------------------------------------------------------

def _export_graph(module, inputs: tuple, input_names: list[str], output_names: list[str], path: Path) -> None:
    import warnings

    import torch

    axes = {n: _DYNAMIC for n in (*input_names, *output_names)}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape arithmetic and deprecation
        torch.onnx.export(module.eval(), inputs, str(path), dynamo=False, opset_version=OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=axes,
                          do_constant_folding=True)


def _tables(prefix: str, entropy_model) -> dict[str, np.ndarray]:
    tables, _ = entropy_model.coding_tables()
    return {f"{prefix}.freqs": tables.packed_freqs().astype(np.int32), f"{prefix}.lengths": tables.lengths,
            f"{prefix}.offsets": tables.offsets}


def _weights_digest(name: str, quality: int) -> str:
    """``FILE sha256:HEX`` of the shipped weights a sender is exported from."""
    from importlib import resources

    from .models._registry import weights_name

    file = weights_name(name, quality)
    digest = hashlib.sha256(resources.files("icm.weights").joinpath(file).read_bytes()).hexdigest()
    return f"{file} sha256:{digest[:16]}"


def outputs(name: str, quality: int) -> list[str]:
    """The names :func:`export` writes for ``name`` at ``quality`` (but the graphs' parts)."""
    return [f"{name}-q{quality}.json", f"{name}-q{quality}.npz"]


def export(name: str, quality: int, out_dir: str | Path, model=None) -> list[Path]:
    """Write the sender of ``name`` at ``quality`` into ``out_dir`` (an existing folder).

    Files: ``NAME-qQ.json`` (what icm-edge reads), ``NAME-qQ.npz`` (integer tables,
    fixed-point hyper-synthesis, global filters), ``NAME-qQ.<part>.onnx``, and for
    ``dicm-lite0`` the shared ``dicm-lite0.head.onnx``.  Each is written beside its
    destination under a temporary name and renamed into place once all are written.

    Args:
        model: the model to export (default: the shipped weights); any model of the
            exported families' architectures (tests export seeded small ones).

    Returns:
        The paths written.

    Raises:
        IcmError: a model that does not export, or a missing ``onnx`` extra.
    """
    import shutil
    import tempfile

    _require()
    if model is None and name not in EXPORTABLE:
        raise IcmError(f"icm export-onnx exports {', '.join(EXPORTABLE)}, not {name!r}")
    weights = None
    if model is None:
        from .codec import get_model

        model = get_model(name, quality)
        weights = _weights_digest(name, quality)
    if getattr(model, "semantic", None) is not None:
        raise IcmError(f"{name} at quality {quality} has a steered sender (semantic steering reads the whole "
                       "backbone's tail), which icm export-onnx does not export yet")
    out = Path(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        names = [p.name for p in _write(name, quality, model, tmp, weights)]
        for n in names:
            os.replace(tmp / n, out / n)
    except OSError as e:
        raise IcmError(f"cannot write into {out}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [out / n for n in names]


def _write(name: str, quality: int, model, out: Path, weights: str | None) -> list[Path]:
    import torch

    from .latent import FactorizedLatent, MeanScaleHyperprior
    from .layers.fixed_point_numpy import FixedPointNet
    from .models import model_info

    info = model_info(name)
    stem = f"{name}-q{quality}"
    written: list[Path] = []
    graphs: dict[str, object] = {}
    arrays: dict[str, np.ndarray] = {}
    _, _, Redundancy, _, _ = _modules()

    c = getattr(model, "in_channels", 3)
    side = max(model.stride, 32)
    x = torch.rand(1, c, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if hasattr(model, "head_features"):
            head = out / f"{name}.head.onnx"
            _export_graph(model.backbone.head, (x,), ["x"], ["f"], head)
            f = model.head_features(x)
            _export_graph(Redundancy(model.re), (f,), ["f"], ["f_re"], out / f"{stem}.re.onnx")
            graphs.update(head=head.name, re=f"{stem}.re.onnx")
            feat = model.re(f)["f_re"]
            written += [head, out / f"{stem}.re.onnx"]
        else:
            feat = x
        stages, filters = _g_a_stages(model)
        names = []
        for i, stage in enumerate(stages):
            last = i == len(stages) - 1
            ins = ["f"] if i == 0 else ["x", "p", "a", "b"]
            outs = ["y"] if last else ["x", "p", "a", "b"]
            path = out / (f"{stem}.g_a.onnx" if len(stages) == 1 else f"{stem}.g_a.{i}.onnx")
            args = feat if isinstance(feat, tuple) else (feat,)
            _export_graph(stage, args, ins, outs, path)
            feat = stage(*args)
            if not last:
                x_, p_, a_, b_ = feat
                b_ = torch.from_numpy(global_filter(b_.numpy(), filters[i]))
                feat = (x_, p_, a_, b_)
                arrays[f"g_a.filter.{i}"] = filters[i]
            names.append(path.name)
            written.append(path)
        graphs["g_a"] = names
        y = feat
        latent = model.latent
        if isinstance(latent, MeanScaleHyperprior):
            _export_graph(latent.h_a, (y,), ["y"], ["z"], out / f"{stem}.h_a.onnx")
            graphs["h_a"] = f"{stem}.h_a.onnx"
            written.append(out / f"{stem}.h_a.onnx")
            arrays.update(_tables("z", latent.z_prior))
            arrays.update(_tables("y", latent.y_conditional))
            arrays["y.thresholds"] = latent.y_conditional.scale_thresholds(latent.act_bits)
            arrays.update(FixedPointNet.from_torch(latent._fixed_point_h_s()).to_arrays("h_s."))
            entropy = "hyperprior"
        elif isinstance(latent, FactorizedLatent):
            arrays.update(_tables("y", latent.prior))
            entropy = "factorized"
        else:
            raise IcmError(f"{name}: latent codec {type(latent).__name__} does not export")

    tables = out / f"{stem}.npz"
    np.savez_compressed(tables, **arrays)
    written.append(tables)
    native = getattr(model, "input_size", None)
    desc = {
        "format": FORMAT, "model": name, "model_id": info.model_id, "quality": quality,
        "stride": int(model.stride), "in_channels": int(c), "input_size": list(native) if native else None,
        "entropy": entropy, "graphs": graphs, "tables": tables.name, "weights": weights,
    }
    meta = out / f"{stem}.json"
    meta.write_text(json.dumps(desc, indent=1, sort_keys=True) + "\n")
    return [*written, meta]


def shipped() -> list[tuple[str, int]]:
    """``(name, quality)`` of every shipped weight whose sender exports."""
    from .models import has_weights, model_info

    return [(n, q) for n in EXPORTABLE for q in model_info(n).qualities if has_weights(n, q)]


def export_all(out_dir: str | Path, progress=None) -> list[Path]:
    """:func:`export` for every shipped weight (:func:`shipped`)."""
    written = []
    for name, quality in shipped():
        written += export(name, quality, out_dir)
        if progress is not None:
            progress(name, quality)
    return written
