"""icm.train.cut_depth: the untrained block transform at three cuts of EfficientNet-Lite0."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import torch

from icm.models.backbones import efficientnet_lite0
from icm.train.cut_depth import cuts, measure_cut

from conftest import random_image

torch.set_num_threads(1)


def test_every_cut_codes_y_at_stride_16_and_coarser_grids_cost_fewer_bits():
    bb = efficientnet_lite0(True)
    train = torch.cat([random_image(64, 64, seed=s) for s in range(6)])
    held = torch.cat([random_image(64, 64, seed=10 + s) for s in range(4)])
    sets = {"a": slice(0, 2), "b": slice(2, 4)}
    found = cuts(bb)
    assert list(found) == ["stride 4", "stride 8", "stride 16"]
    with torch.no_grad():
        logits = bb(held)
    for name, (head, rest, block) in found.items():
        f = head(held)
        assert f.shape[-1] // block == 64 // 16, name  # y at stride 16 for every cut
        with torch.no_grad():
            assert torch.allclose(rest(f), logits, atol=1e-4), name  # head + rest is the whole network
        rows = measure_cut(head, rest, block, train, held, sets, steps=(0.01, 4.0, 64.0))
        assert [r["step"] for r in rows] == [0.01, 4.0, 64.0]
        bpp = [(r["a"]["bpp"] + r["b"]["bpp"]) / 2 for r in rows]
        assert bpp[0] > bpp[1] > bpp[2] >= 0, (name, bpp)
        assert rows[0]["a"]["agreement"] == rows[0]["b"]["agreement"] == 1.0, name  # a grid this fine keeps the class
