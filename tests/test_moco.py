"""MoCo v2 and ContrastiveCrop (icm.train.moco): queue, momentum, InfoNCE,
heatmap boxes, Beta-distributed crop centres, the two-view dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import pytest

from icm.train.moco import (
    ContrastiveCrop,
    ContrastiveCropViews,
    MoCo,
    concat_all_gather,
    heatmap_box,
    heatmap_boxes,
    moco_v2_augment,
    should_refresh,
)

torch.set_num_threads(1)


def tiny_encoder() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten())  # (B, 32)


def tiny_moco(queue_size: int = 16, **kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo(tiny_encoder(), feat_dim=32, dim=8, hidden=16, queue_size=queue_size, **kw)


def images(b: int, seed: int = 1, size: int = 8) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- MoCo
def test_queue_pointer_and_newest_keys():
    m = tiny_moco(queue_size=16)
    x = images(4)
    out = m(x, x)
    assert int(m.queue_ptr) == 4
    with torch.no_grad():  # key params are unchanged since forward; BN in train mode as there
        k = F.normalize(m.projector_k(m.encoder_k(x)), dim=1)
    torch.testing.assert_close(m.queue[:, :4], k.T)
    torch.testing.assert_close(m.queue.norm(dim=0), torch.ones(16))
    assert out["logits"].shape == (4, 17) and out["labels"].tolist() == [0] * 4


def test_queue_wraps_around():
    m = tiny_moco(queue_size=10)
    keys = [F.normalize(torch.randn(4, 8), dim=1) for _ in range(3)]
    for k in keys:
        m.enqueue(k)
    assert int(m.queue_ptr) == 2  # 12 mod 10
    torch.testing.assert_close(m.queue[:, 4:8], keys[1].T)
    torch.testing.assert_close(m.queue[:, 8:10], keys[2][:2].T)
    torch.testing.assert_close(m.queue[:, 0:2], keys[2][2:].T)
    m.enqueue(F.normalize(torch.randn(13, 8), dim=1))  # larger than the queue: newest 10 kept
    assert int(m.queue_ptr) == 2


def test_forward_wraps_queue():
    m = tiny_moco(queue_size=6)
    for s in range(3):
        m(images(4, s), images(4, s + 10))
    assert int(m.queue_ptr) == 0  # 12 mod 6
    torch.testing.assert_close(m.queue.norm(dim=0), torch.ones(6))


def test_momentum_update_exact_and_frozen():
    enc = tiny_encoder()
    enc[0].weight.requires_grad_(False)  # partially frozen encoder
    m = MoCo(enc, feat_dim=32, dim=8, hidden=16, queue_size=8, momentum=0.9)
    assert all(not p.requires_grad for p in [*m.encoder_k.parameters(), *m.projector_k.parameters()])
    assert torch.equal(m.encoder_k[0].weight, enc[0].weight)
    with torch.no_grad():
        for p in [*m.encoder_q.parameters(), *m.projector_q.parameters()]:
            p.fill_(1.0)
        for p in [*m.encoder_k.parameters(), *m.projector_k.parameters()]:
            p.fill_(0.0)
    m.momentum_update()
    for p in [*m.encoder_k.parameters(), *m.projector_k.parameters()]:
        assert torch.equal(p, torch.full_like(p, 0.1))  # frozen conv weight included


def test_frozen_params_stay_bit_identical_in_training():
    torch.manual_seed(0)
    enc = tiny_encoder()
    enc[0].weight.requires_grad_(False)
    frozen = enc[0].weight.clone()
    m = MoCo(enc, feat_dim=32, dim=8, hidden=16, queue_size=8)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for s in range(3):
        opt.zero_grad()
        m(images(4, s), images(4, s + 5))["loss"].backward()
        opt.step()
    assert torch.equal(m.encoder_q[0].weight, frozen) and torch.equal(m.encoder_k[0].weight, frozen)
    assert not torch.equal(m.encoder_k[0].bias, m.encoder_q[0].bias)  # trained ones lag behind


def test_infonce_matches_manual_cross_entropy():
    m = tiny_moco(queue_size=16, temperature=0.2)
    xq, xk = images(4, 1), images(4, 2)
    queue = m.queue.clone()
    out = m(xq, xk)
    q = F.normalize(m.projector_q(m.encoder_q(xq)), dim=1)
    with torch.no_grad():
        k = F.normalize(m.projector_k(m.encoder_k(xk)), dim=1)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue], 1) / 0.2
    assert out["logits"].shape == (4, 17)
    torch.testing.assert_close(out["logits"], logits)
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)))
    m.eval()
    ptr = int(m.queue_ptr)
    m(xq, xk)
    assert int(m.queue_ptr) == ptr  # eval: no update, no enqueue


def test_loss_decreases():
    m = tiny_moco(queue_size=32, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    data = F.interpolate(torch.rand(128, 3, 4, 4, generator=g), size=16, mode="bilinear")  # smooth toy images
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(40):
        x = data[torch.randperm(128, generator=g)[:16]]
        xq, xk = (x + 0.05 * torch.randn(x.shape, generator=g) for _ in range(2))
        loss = m(xq, xk)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # The first two steps see the random initial queue; compare once it holds real keys.
    first, last = sum(losses[2:7]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first, losses


def test_concat_all_gather_identity_and_bad_input():
    x = torch.randn(3, 4)
    assert concat_all_gather(x) is x
    with pytest.raises(ValueError, match="batches differ"):
        tiny_moco()(images(2), images(3))
    with pytest.raises(ValueError, match="temperature"):
        MoCo(tiny_encoder(), 32, temperature=0.0)


def test_shuffle_bn_path_single_rank(tmp_path):
    import torch.distributed as dist

    m = tiny_moco(queue_size=16)
    x = images(4)
    with torch.no_grad():
        plain = m._keys(x)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        with torch.no_grad():
            shuffled = m._keys(x)
    finally:
        dist.destroy_process_group()
    torch.testing.assert_close(shuffled, plain)  # permuted then restored; BN stats are order-free


# ---------------------------------------------------------------- augmentation
def test_moco_v2_augment_range_and_size():
    torch.manual_seed(0)
    aug = moco_v2_augment(32)
    for _ in range(5):
        y = aug(torch.rand(3, 40, 50))
        assert y.shape == (3, 32, 32) and y.min() >= 0 and y.max() <= 1


# ---------------------------------------------------------------- ContrastiveCrop
def test_heatmap_box_hot_rectangle():
    f = torch.zeros(4, 8, 8)
    f[:, 2:5, 5:8] = 1.0  # rows 2..4, cols 5..7
    x0, y0, x1, y1 = heatmap_box(f, (64, 64))
    # Bilinear upsampling spreads the block by under half a feature cell (1/16).
    assert x0 <= 5 / 8 and x0 == pytest.approx(5 / 8, abs=1 / 16)
    assert y0 <= 2 / 8 and y0 == pytest.approx(2 / 8, abs=1 / 16)
    assert x1 == 1.0
    assert y1 >= 5 / 8 and y1 == pytest.approx(5 / 8, abs=1 / 16)
    assert heatmap_box(torch.full((4, 8, 8), 3.0), (64, 64)) == (0.0, 0.0, 1.0, 1.0)
    boxes = heatmap_boxes(torch.stack([f, torch.zeros(4, 8, 8)]), (64, 64))
    assert boxes.shape == (2, 4) and boxes[1].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert boxes[0].tolist() == pytest.approx([x0, y0, x1, y1])


def test_contrastive_crop_centres_follow_beta():
    from scipy import stats

    box = (0.2, 0.3, 0.6, 0.9)
    H, W = 200, 300
    crop = ContrastiveCrop(size=32, seed=0)
    cy, cx = torch.tensor([crop.sample_center(H, W, box) for _ in range(4000)]).T
    u, v = (cx / W - 0.2) / 0.4, (cy / H - 0.3) / 0.6
    for t in (u, v):
        assert t.min() >= 0 and t.max() <= 1
        assert ((t < 0.1) | (t > 0.9)).float().mean() > ((t > 0.4) & (t < 0.6)).float().mean()
        assert t.mean().item() == pytest.approx(0.5, abs=0.02)
        assert t.var().item() == pytest.approx(0.6**2 / (1.2**2 * 2.2), abs=0.01)
        assert stats.kstest(t.double().numpy(), stats.beta(0.6, 0.6).cdf).pvalue > 0.01
    for _ in range(500):
        top, left, h, w = crop.sample_rect(H, W, box)
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        assert 0.2 * H * W * 0.9 <= h * w <= H * W
    a = [ContrastiveCrop(seed=5).sample_rect(H, W, box) for _ in range(2)]
    assert a[0] == a[1]  # seeded
    with pytest.raises(ValueError, match="normalised"):
        crop.sample_center(H, W, (0.5, 0.0, 0.4, 1.0))


def _ramp_images(n: int, h: int = 64, w: int = 64) -> list[torch.Tensor]:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return [torch.stack([xs, ys, torch.zeros_like(xs)])] * n  # channel 0 = x, 1 = y


def test_views_warmup_then_boxes():
    views = ContrastiveCropViews(_ramp_images(3), size=16, seed=0, photometric=lambda x: x)
    assert views.warmup and views.boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]] * 3
    lo, hi = 0.85, 0.95  # box (0.85, 0.85, 0.95, 0.95)

    def crops(n=200):
        qs = torch.stack([views[i % 3][0] for i in range(n)])[:, :2]  # (n, 2: x/y ramps, 16, 16)
        meets = (qs.amax((2, 3)) >= lo - 0.02) & (qs.amin((2, 3)) <= hi + 0.02)  # crop range meets the box
        return qs.mean((2, 3)).mean(0), meets.all(1).float().mean()

    centre, meets = crops()
    assert ((centre - 0.5).abs() < 0.1).all() and meets < 0.7
    views.set_boxes([[lo, lo, hi, hi]] * 3)
    views.warmup = False
    centre, meets = crops()
    # Every crop contains its centre, drawn in the box (the shift inside the image keeps it).
    assert meets == 1.0 and (centre > 0.6).all()
    with pytest.raises(ValueError, match="shape"):
        views.set_boxes([[0.0, 0.0, 1.0, 1.0]])


def test_views_state_reaches_persistent_workers():
    from torch.utils.data import DataLoader

    views = ContrastiveCropViews(_ramp_images(3), size=16, photometric=lambda x: x)
    loader = DataLoader(views, batch_size=3, num_workers=1, persistent_workers=True)
    next(iter(loader))  # the worker starts during warm-up
    views.set_boxes([[0.85, 0.85, 0.95, 0.95]] * 3)
    views.warmup = False
    qs = torch.cat([q for _ in range(10) for q, _ in loader])[:, :2]
    assert (qs.amax((2, 3)) >= 0.83).all()  # every crop reaches the box: the worker saw the update


def test_views_default_augment_and_update_boxes():
    torch.manual_seed(0)
    imgs = [torch.zeros(3, 40, 40), torch.zeros(3, 56, 48)]
    for im in imgs:
        im[:, 8:24, 16:32] = 1.0
    views = ContrastiveCropViews([(im, 7) for im in imgs], size=24, box_size=32)
    for i in range(2):
        q, k = views[i]
        assert q.shape == k.shape == (3, 24, 24)
        assert min(q.min(), k.min()) >= 0 and max(q.max(), k.max()) <= 1
    calls = []

    def feature_fn(x):  # stand-in for layer4: brightness pooled to stride 4
        calls.append(x.shape)
        return F.avg_pool2d(x, 4)

    boxes = views.update_boxes(feature_fn, batch_size=1)
    assert calls == [(1, 3, 32, 32)] * 2 and torch.equal(boxes, views.boxes)
    # image 0: block at cols 16..31, rows 8..23 of 40 → (0.4, 0.2, 0.8, 0.6), widened by bilinear spread
    assert boxes[0].tolist() == pytest.approx([0.4, 0.2, 0.8, 0.6], abs=0.13)
    assert boxes[0, 0] <= 0.4 and boxes[0, 2] >= 0.8


def test_should_refresh_schedule():
    hits = [e for e in range(100) if should_refresh(e, warmup_epochs=10, every=20)]
    assert hits == [10, 30, 50, 70, 90]
    with pytest.raises(ValueError):
        should_refresh(0, 0, 0)
