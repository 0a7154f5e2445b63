"""``--task feature-snr``: how close a codec's decoded stage features lie to the uncompressed ones.

Refinement at the sender (:mod:`icm.refine`) descends the very network that scores
classification agreement, so a refined file's agreement says little about what another
network, or another task, would read from it.  This task measures what the receiver's
network is given instead of what it answers: the backbone's stage features at strides 8,
16 and 32 from the file, against those of the uncompressed picture, as a signal-to-noise
ratio in dB per stage, ``10·log10(‖f‖² / ‖f̂ − f‖²)``, and their mean (``feature_snr``,
higher is better).

* ``dicm`` models: ``f̂`` is the receiver's tail on the decoded latent (no pixels);
* every other codec (anchors, pixel models): the same backbone (``dicm-lite0``'s
  EfficientNet-Lite0 with its ImageNet weights) on the decoded pixels.
"""

from __future__ import annotations

import functools

import numpy as np

from ..errors import IcmError
from .taskbase import Task

FAMILY = "dicm-lite0"
STAGES = ("0", "1", "2")


@functools.lru_cache(maxsize=1)
def _backbone():
    """The reference backbone (any shipped quality: the backbone is the same at every one)."""
    from .. import codec
    from ..models import has_weights, model_info

    qualities = [q for q in model_info(FAMILY).qualities if has_weights(FAMILY, q)]
    if not qualities:
        raise IcmError(f"feature-snr runs {FAMILY}'s backbone, but no {FAMILY} weights ship")
    return codec.get_model(FAMILY, max(qualities)).backbone.eval()


def _stages(image: np.ndarray):
    import torch

    from ..data import to_tensor

    with torch.no_grad():
        return _backbone().features(to_tensor(np.array(image))[None])


def stage_snr(got, ref) -> dict:
    """Per stage ``snr_s8``, ``snr_s16``, ``snr_s32`` (dB) and their mean ``feature_snr``;
    features are cropped to their common extent."""
    out = {}
    for key, stride in zip(STAGES, (8, 16, 32)):
        a, b = got[key], ref[key]
        h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
        a, b = a[..., :h, :w].double(), b[..., :h, :w].double()
        err = float((a - b).pow(2).sum())
        out[f"snr_s{stride}"] = 10.0 * np.log10(float(b.pow(2).sum()) / max(err, 1e-12))
    out["feature_snr"] = float(np.mean([out[f"snr_s{s}"] for s in (8, 16, 32)]))
    return out


class FeatureSNR(Task):
    """Stage-feature fidelity (see the module's doc)."""

    name = "feature-snr"
    latent_name = "classify"  # dicm models whose latent classifies decode the stages it needs
    metrics = ("feature_snr", "snr_s8", "snr_s16", "snr_s32")
    primary = "feature_snr"
    network = True

    def config(self) -> dict:
        return {"backbone": f"{FAMILY}'s EfficientNet-Lite0 (ImageNet weights), stages at strides 8, 16, 32",
                "measure": "10 log10(|f|^2 / |f_hat - f|^2) per stage, dB; feature_snr their mean"}

    def on_pixels(self, image, decoded, label, ref):
        return stage_snr(_stages(decoded), _stages(image))

    def on_latent(self, model, y_hat, image, label, ref):
        import torch

        if not hasattr(model, "stages"):
            raise IcmError(f"task 'feature-snr' reads a split backbone's stages; {model.model_name} has none")
        with torch.no_grad():
            got = model.stages(model.decode_features(y_hat, tuple(image.shape[:2])))
        return stage_snr(got, _stages(image))
