"""``icm eval --task feature-snr``: stage-feature fidelity of decoded files and pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icm.eval.features import FeatureSNR, stage_snr
from icm.eval.tasks import TASKS, get_task

torch.set_num_threads(1)


def test_snr_is_exact_on_known_errors():
    torch.manual_seed(0)
    ref = {k: torch.randn(1, 4, n, n) for k, n in zip(("0", "1", "2"), (8, 4, 2))}
    # an error of a tenth of each stage's amplitude: 20 dB, whatever the stage
    got = {k: v * 1.1 for k, v in ref.items()}
    out = stage_snr(got, ref)
    for s in (8, 16, 32):
        assert out[f"snr_s{s}"] == pytest.approx(20.0, abs=1e-4)
    assert out["feature_snr"] == pytest.approx(20.0, abs=1e-4)
    # stages one cell larger (padding) are cropped to the common extent
    pad = {k: torch.nn.functional.pad(v, (0, 1, 0, 1), value=5.0) for k, v in got.items()}
    assert stage_snr(pad, ref)["feature_snr"] == pytest.approx(20.0, abs=1e-4)
    # perfect features: a large finite number, not inf
    assert np.isfinite(stage_snr(ref, ref)["feature_snr"]) and stage_snr(ref, ref)["feature_snr"] > 100


def test_the_task_is_listed_and_measures_pixels_and_latents(monkeypatch):
    from test_detection import make_codec

    from icm.eval import features

    assert "feature-snr" in TASKS and isinstance(get_task("feature-snr"), FeatureSNR)
    codec = make_codec()
    monkeypatch.setattr(features, "_backbone", lambda: codec.backbone)
    task = FeatureSNR()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    same = task.on_pixels(image, image, None, None)
    assert same["feature_snr"] > 100
    noisy = np.clip(image.astype(int) + rng.integers(-40, 41, image.shape), 0, 255).astype(np.uint8)
    worse = task.on_pixels(image, noisy, None, None)
    assert 0 < worse["feature_snr"] < same["feature_snr"]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    y_hat = codec.decompress(codec.compress(x), pixels=False)["y_hat"]
    lat = task.on_latent(codec, y_hat, image, None, None)
    assert set(lat) == {"feature_snr", "snr_s8", "snr_s16", "snr_s32"}
    assert np.isfinite(lat["feature_snr"]) and lat["feature_snr"] < same["feature_snr"]
