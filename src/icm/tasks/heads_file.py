"""Detection heads files: the FPN, RPN, RoI heads (and a dense head) of
:class:`icm.tasks.detection.CompressedDomainRCNN` without the codec, as float16
safetensors with what rebuilds them (``icm/weights/<model>-rcnn.safetensors``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..models.dicm import DICM
    from .detection import CompressedDomainRCNN

# The codec and its backbone are not part of a heads file: they ship (or install) on their own.
_NOT_HEADS = ("detector.backbone.body.", "latent_backbone.")


def head_state(heads: CompressedDomainRCNN) -> dict[str, Tensor]:
    """State of the FPN, RPN and RoI heads only (each tensor once), not the codec or backbone."""
    return {k: v for k, v in heads.state_dict().items() if not k.startswith(_NOT_HEADS)}


def load_head_state(heads: CompressedDomainRCNN, state: dict[str, Tensor], source: str = "state",
                    missing_ok: tuple[str, ...] = ()) -> None:
    """Strictly load :func:`head_state`-style tensors: every head key, nothing else, same shapes
    (keys starting with ``missing_ok`` may be absent and keep their values).

    Raises:
        IcmError: missing or unexpected keys, or a shape that differs.
    """
    from ..errors import IcmError

    want = head_state(heads)
    missing = sorted(k for k in want.keys() - state.keys() if not (missing_ok and k.startswith(missing_ok)))
    unexpected = sorted(state.keys() - want.keys())
    if missing or unexpected:
        raise IcmError(f"{source} does not fit the detection heads: missing {missing[:3]}, unexpected {unexpected[:3]}")
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(want[k].shape)]
    if bad:
        raise IcmError(f"{source}: {bad[0]} is {tuple(state[bad[0]].shape)}, the heads need {tuple(want[bad[0]].shape)}")
    heads.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, strict=False)


def save_heads(heads: CompressedDomainRCNN, path, metadata: dict | None = None):
    """Write the heads (not the codec) as float16 safetensors, with what rebuilds them.

    The ``icm`` metadata entry holds ``metadata`` (recipe, data, steps, measured
    mAP, …) plus ``architecture`` (the constructor's arguments) and
    ``categories`` (``{id: name}``).  Shipped heads live in
    ``icm/weights/<model>-rcnn.safetensors`` and serve every quality of the family.

    Raises:
        ValueError: arguments of the heads that are not JSON (injected modules).
    """
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    meta = {**(metadata or {}), "architecture": heads.architecture,
            "categories": {str(k): v for k, v in (heads.categories or {}).items()}}
    try:
        blob = json.dumps(meta, sort_keys=True)
    except TypeError as e:
        raise ValueError(f"heads with non-JSON arguments cannot be saved ({e})") from None
    state = {k: (v.half() if v.dtype == torch.float32 else v).detach().cpu().contiguous()
             for k, v in head_state(heads).items()}
    path = Path(path)
    save_file(state, str(path), metadata={"icm": blob})
    return path


def load_heads(codec: DICM, model_name: str, path=None) -> CompressedDomainRCNN | None:
    """Detection heads of ``model_name`` built on ``codec`` (shared, frozen), in eval mode.

    Args:
        codec: a ``dicm`` model of the family (any quality).
        model_name: the family, e.g. ``"dicm-lite0"``.
        path: a heads file to read instead of the shipped ``icm/weights/<model_name>-rcnn.safetensors``.

    Returns:
        The heads with ``architecture``, ``categories`` and ``metadata`` set, or
        ``None`` when no heads ship for the family (and no ``path`` is given).

    Raises:
        IcmError: a missing ``path``, a file made for another family, without
            architecture, or whose tensors do not fit (strict: every head
            parameter, nothing else).
    """
    from importlib import resources
    from pathlib import Path

    from safetensors.torch import load

    from ..errors import IcmError
    from ..models._registry import heads_name, read_metadata

    if path is None:
        res = resources.files("icm.weights").joinpath(heads_name(model_name))
        if not res.is_file():
            return None
        raw, source = res.read_bytes(), heads_name(model_name)
    else:
        try:
            raw, source = Path(path).read_bytes(), str(path)
        except (FileNotFoundError, IsADirectoryError):
            raise IcmError(f"detection heads file not found: {path}") from None
    try:
        meta = read_metadata(raw)
        arch = dict(meta["architecture"])
    except (ValueError, KeyError, TypeError):
        raise IcmError(f"{source} is not an icm detection heads file (no architecture in its metadata)") from None
    if meta.get("model", model_name) != model_name:
        raise IcmError(f"{source} holds heads for {meta['model']}, not {model_name}")
    kwargs = arch.pop("rcnn_kwargs", {})
    arch["anchor_sizes"] = tuple(tuple(a) for a in arch["anchor_sizes"])
    arch["aspect_ratios"] = tuple(arch["aspect_ratios"])
    arch["mask_layers"] = tuple(arch["mask_layers"])
    from .detection import CompressedDomainRCNN

    heads = CompressedDomainRCNN(codec, freeze_codec=True, **arch, **kwargs)
    load_head_state(heads, dict(load(raw)), source)
    heads.categories = {int(k): v for k, v in meta.get("categories", {}).items()}
    heads.metadata = meta
    return heads.eval()
