"""Turn a training checkpoint into shipped weights: ``icm/weights/<name>-q<Q>.safetensors``.

Float tensors are stored in float16 (half the bytes; the codec is then
*defined* by the rounded weights).  The integer coding tables are rebuilt
from the rounded weights and stored beside them, so every machine decodes
with the very same integers.  Metadata (recipe, data, steps, measured
figures) goes into the safetensors header under the key ``"icm"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..entropy._tables import TableModule


def round_to_half(model: torch.nn.Module) -> None:
    """Round every float parameter and buffer of ``model`` to float16 precision, in place."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point() and t.dtype == torch.float32:
                t.copy_(t.half().float())


def refresh_tables(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, TableModule):
            m.coding_tables()


def load_checkpoint(model: torch.nn.Module, path: str) -> dict:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    return {"global_step": int(ckpt.get("global_step", 0))}


def save_weights(model: torch.nn.Module, path: str | Path, metadata: dict) -> Path:
    """Write ``model`` (already rounded, tables fresh) with ``metadata``."""
    from safetensors.torch import save_file

    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        state[k] = v.half() if v.dtype == torch.float32 else v
    path = Path(path)
    save_file(state, str(path), metadata={"icm": json.dumps(metadata, sort_keys=True)})
    return path
