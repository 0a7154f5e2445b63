"""Reading weights to start or export from: one reader for Lightning checkpoints and
``.safetensors`` files, used by every recipe and by export."""

from __future__ import annotations

from pathlib import Path

from ..errors import IcmError


def read_state(path: str | Path, prefix: str = "model.") -> tuple[dict, int]:
    """``(state dict, global step)`` of a checkpoint: a Lightning ``.ckpt`` (its keys under
    ``prefix``, with the prefix removed) or a ``.safetensors`` file (every key, floats as
    float32, step 0).

    Raises:
        IcmError: no such file.
    """
    import torch

    path = str(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            raw = load_file(path)
        except FileNotFoundError:
            raise IcmError(f"checkpoint not found: {path}") from None
        return {k: (v.float() if v.is_floating_point() else v) for k, v in raw.items()}, 0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise IcmError(f"checkpoint not found: {path}") from None
    state = {k.removeprefix(prefix): v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    return state, int(ckpt.get("global_step", 0))


def load_into(model, path: str | Path) -> int:
    """Load every weight of a checkpoint into ``model`` (strict); returns its global step."""
    state, step = read_state(path)
    model.load_state_dict(state)
    return step
