"""Class-agnostic masks added to detection-only heads: the predictor, saving and loading,
partial starts from detection heads, and a mask head that learns alone."""

from __future__ import annotations

import pytest
import torch
from test_detection import make_codec, make_heads, scene

from icm.errors import IcmError
from icm.tasks.detection import AgnosticMaskPredictor
from icm.tasks.heads_file import head_state, load_head_state, load_heads, save_heads
from icm.train.detection import MASK_PARTS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def codec():
    return make_codec()


def test_one_mask_serves_every_class():
    torch.manual_seed(0)
    p = AgnosticMaskPredictor(8, 8, num_classes=5)
    out = p(torch.randn(3, 8, 14, 14))
    assert out.shape == (3, 5, 28, 28)
    assert torch.equal(out[:, 0], out[:, 4]) and torch.equal(out[:, 1], out[:, 3])
    assert p.mask_fcn_logits.out_channels == 1
    # logits of a fresh head are moderate (the loss does not start saturated)
    assert float(out.detach().abs().mean()) < 3.0


def test_agnostic_heads_save_and_load_as_they_were(codec, tmp_path):
    heads = make_heads(codec, masks=True, mask_agnostic=True)
    heads.categories = {1: "person", 2: "car"}
    assert heads.architecture["mask_agnostic"] is True
    assert "mask_agnostic" not in make_heads(codec, masks=True).architecture  # older files rebuild unchanged
    path = save_heads(heads, tmp_path / "h.safetensors", {"model": "dicm-lite0"})
    back = load_heads(codec, "dicm-lite0", path=path)
    assert isinstance(back.detector.roi_heads.mask_predictor, AgnosticMaskPredictor)
    for k, v in head_state(heads).items():
        assert torch.allclose(head_state(back)[k], v.half().float())


def test_a_mask_head_starts_from_detection_heads_and_learns_alone(codec):
    det = make_heads(codec, masks=False, seed=3)
    seg = make_heads(codec, masks=True, mask_agnostic=True, seed=4)
    state = head_state(det)
    with pytest.raises(IcmError, match="missing"):
        load_head_state(seg, state)
    load_head_state(seg, state, missing_ok=MASK_PARTS)
    for k, v in state.items():
        assert torch.equal(head_state(seg)[k], v)
    for name, p in seg.named_parameters():
        p.requires_grad_(name.startswith(MASK_PARTS))
    before = {k: v.clone() for k, v in head_state(seg).items()}
    images, targets = scene()
    opt = torch.optim.SGD(seg.trainable_parameters(), lr=0.02, momentum=0.9)
    seg.train()
    first = None
    for _ in range(8):
        loss = seg.forward_pixels(list(images), targets)["loss_mask"]
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first
    after = head_state(seg)
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed and all(k.startswith(MASK_PARTS) for k in changed)
