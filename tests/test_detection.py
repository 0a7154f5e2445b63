"""Faster / Mask R-CNN on compressed-domain ``dicm`` features (``icm.tasks.detection``)
and COCO mAP (``icm.tasks.metrics``): losses and gradients, no resizing, boxes and
masks in input pixels, bitstream analysis equal to the eval forward, training."""

from __future__ import annotations

import pytest
import torch
import torchvision.models.detection.transform as tv_transform

from icm.models import create_model
from icm.models.dicm import DICM
from icm.tasks.detection import CompressedDomainRCNN, LatentBackbone, PixelBackbone, detect_from_bitstream
from icm.tasks.metrics import coco_map

torch.set_num_threads(1)

# Narrow codec (as tests/test_dicm.py's SMALL) and narrow heads: each test runs in a second or two.
CODEC = dict(re_dims=(16,), re_depths=(), dims=(24, 48, 48), M=48, N=16, hyper_dim=32, hyper_heads=2,
             filter_size=(8, 8), pretrained_backbone=False)
HEADS = dict(fpn_channels=32, representation_size=64, mask_layers=(16, 16), box_score_thresh=0.0,
             rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=200,
             rpn_post_nms_top_n_test=50, box_batch_size_per_image=64, box_detections_per_img=20)
H, W = 96, 128


def make_codec(seed: int = 0) -> DICM:
    torch.manual_seed(seed)
    return create_model("dicm-lite0", quality=4, pretrained=False, **CODEC).eval()


def make_heads(codec: DICM, masks: bool = True, seed: int = 1, **kw) -> CompressedDomainRCNN:
    torch.manual_seed(seed)
    return CompressedDomainRCNN(codec, num_classes=3, masks=masks, **{**HEADS, **kw})


def scene(h: int = H, w: int = W) -> tuple[torch.Tensor, list[dict]]:
    """Two images with one or two coloured rectangles on a grey ramp, and their exact targets."""
    rects = [[(1, (0.9, 0.1, 0.1), (10, 12, 60, 50))],
             [(2, (0.1, 0.2, 0.9), (70, 30, 120, 80)), (1, (0.9, 0.1, 0.1), (8, 50, 40, 90))]]
    ramp = torch.linspace(0.3, 0.6, w).expand(3, h, w)
    images, targets = [], []
    for objs in rects:
        img = ramp.clone()
        masks = torch.zeros(len(objs), h, w, dtype=torch.uint8)
        for i, (_, colour, (x0, y0, x1, y1)) in enumerate(objs):
            img[:, y0:y1, x0:x1] = torch.tensor(colour)[:, None, None]
            masks[i, y0:y1, x0:x1] = 1
        images.append(img)
        targets.append({"boxes": torch.tensor([o[2] for o in objs], dtype=torch.float32),
                        "labels": torch.tensor([o[0] for o in objs]), "masks": masks})
    return torch.stack(images), targets


@pytest.fixture(scope="module")
def codec() -> DICM:
    return make_codec()


@pytest.mark.parametrize("masks", [True, False])
def test_training_losses_reach_every_head_parameter_and_no_frozen_one(masks):
    codec = make_codec()
    heads = make_heads(codec, masks=masks).train()
    assert not codec.training and not codec.backbone.training  # frozen parts stay in eval mode
    x, targets = scene()
    with torch.no_grad():
        y_hat = codec(x)["y_hat"]
    losses = heads.forward_latent(y_hat, (H, W), targets)
    want = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    want |= {"loss_mask"} if masks else set()
    assert set(losses) == want
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()

    trainable = dict((n, p) for n, p in heads.named_parameters() if p.requires_grad)
    assert any(n.startswith("detector.backbone.fpn.") for n in trainable)
    assert any(n.startswith("detector.rpn.") for n in trainable)
    assert any(n.startswith("detector.roi_heads.mask_") for n in trainable) == masks
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad
    assert all(not p.requires_grad and p.grad is None for p in codec.parameters())
    assert {id(p) for p in heads.trainable_parameters()} == {id(p) for p in trainable.values()}


def test_pixel_path_trains_the_same_heads(codec):
    heads = make_heads(codec).train()
    x, targets = scene()
    losses = heads.forward_pixels(x, targets)
    assert "loss_mask" in losses
    sum(losses.values()).backward()
    assert heads.detector.rpn.head.cls_logits.weight.grad is not None
    assert all(p.grad is None for p in codec.parameters())
    # One FPN serves both paths.
    assert heads.latent_backbone.fpn is heads.detector.backbone.fpn
    assert isinstance(heads.detector.backbone, PixelBackbone) and isinstance(heads.latent_backbone, LatentBackbone)
    assert heads.detector.backbone.out_channels == HEADS["fpn_channels"]


def test_odd_sizes_come_back_in_input_pixels_without_resizing(codec, monkeypatch):
    def no_resize(*args, **kwargs):
        raise AssertionError("the detector resized an image")

    monkeypatch.setattr(tv_transform, "_resize_image_and_masks", no_resize)
    heads = make_heads(codec).eval()
    seen = {}
    batch_images = heads.detector.transform.batch_images

    def spy(images, size_divisible=32):
        seen["sizes"] = [tuple(i.shape[-2:]) for i in images]
        seen["batch"] = batch_images(images, size_divisible)
        return seen["batch"]

    monkeypatch.setattr(heads.detector.transform, "batch_images", spy)
    h, w = 97, 131
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_pixels = heads.forward_pixels(x)[0]
        by_latent = heads.forward_latent(codec(x)["y_hat"], (h, w))[0]

    assert seen["sizes"] == [(h, w)]  # normalise/resize left the image as it was
    st = codec.stride  # padded to the codec's stride only
    assert seen["batch"].shape[-2:] == (-(-h // st) * st, -(-w // st) * st) == (112, 144)  # stride 16
    assert torch.equal(seen["batch"][..., :h, :w], x)  # no normalisation either
    with torch.no_grad():  # both paths see pyramids of the same shapes, with exact strides
        pix = heads.detector.backbone(seen["batch"])
        lat = heads.latent_backbone(codec(x)["y_hat"])
    assert [tuple(v.shape[-2:]) for v in pix.values()] == [tuple(v.shape[-2:]) for v in lat.values()]
    assert list(lat) == ["0", "1", "2", "pool"] and lat["0"].shape[-2:] == (112 // 8, 144 // 8)
    for det in (by_pixels, by_latent):
        boxes = det["boxes"]
        assert len(boxes) > 0
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert det["masks"].shape == (len(boxes), 1, h, w)
        assert det["masks"].min() >= 0 and det["masks"].max() <= 1
        assert (det["labels"] >= 1).all() and (det["labels"] < 3).all()


def test_detection_from_a_bitstream_equals_the_eval_forward(codec):
    heads = make_heads(codec).train()
    x = torch.rand(2, 3, 97, 131, generator=torch.Generator().manual_seed(4))
    compressed = codec.compress(x)
    from_file = detect_from_bitstream(codec, heads, compressed)
    assert heads.training  # mode restored
    heads.eval()
    with torch.no_grad():
        y_hat = codec(x)["y_hat"]
        direct = heads.forward_latent(y_hat, [(97, 131)] * 2)
    assert len(from_file) == len(direct) == 2
    for a, b in zip(from_file, direct):
        assert len(a["boxes"]) > 0
        for key in ("boxes", "scores", "labels", "masks"):
            assert torch.equal(a[key], b[key]), key

    with pytest.raises(ValueError, match="another codec"):
        detect_from_bitstream(make_codec(seed=5), heads, compressed)


def test_input_errors(codec):
    with pytest.raises(ValueError, match="resizes"):
        make_heads(codec, min_size=800)
    with pytest.raises(ValueError, match="background"):
        CompressedDomainRCNN(codec, num_classes=1)
    with pytest.raises(ValueError, match="pyramid level"):
        make_heads(codec, anchor_sizes=((16,), (32,)))
    heads = make_heads(codec).train()
    y_hat = torch.zeros(1, codec.M, -(-H // codec.stride) * codec.stride // codec.y_stride,
                        -(-W // codec.stride) * codec.stride // codec.y_stride)
    with pytest.raises(ValueError, match="needs targets"):
        heads.forward_latent(y_hat, (H, W))
    with pytest.raises(ValueError, match="does not fit"):
        heads.eval().forward_latent(y_hat, (H + 1, W))
    bad = [{"boxes": torch.tensor([[5.0, 5, 5, 9]]), "labels": torch.tensor([1]),
            "masks": torch.zeros(1, H, W, dtype=torch.uint8)}]
    with pytest.raises(ValueError, match="x1 > x0"):
        heads.train().forward_latent(y_hat, (H, W), bad)


def test_map_of_ground_truth_is_one_and_of_shifted_boxes_zero():
    _, targets = scene()
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    for iou_type in ("bbox", "segm"):
        result = coco_map(perfect, targets, iou_type)
        assert result == {"map": pytest.approx(1.0), "map_50": pytest.approx(1.0)}, iou_type

    shifted = []
    for p in perfect:
        masks = torch.zeros_like(p["masks"])
        masks[:, :, :] = torch.roll(p["masks"], shifts=(H // 2, W // 2), dims=(1, 2))
        shifted.append({**p, "boxes": p["boxes"] + 200.0, "masks": masks})
    assert coco_map(shifted, targets, "bbox") == {"map": 0.0, "map_50": 0.0}
    assert coco_map(shifted, targets, "segm")["map"] == pytest.approx(0.0)

    # The detector's float (N, 1, H, W) mask probabilities are accepted as they are.
    probs = [{**p, "masks": p["masks"][:, None].float() * 0.9} for p in perfect]
    assert coco_map(probs, targets, "segm")["map"] == pytest.approx(1.0)


def test_map_rejects_malformed_inputs():
    _, targets = scene()
    perfect = [{**t, "scores": torch.ones(len(t["labels"]))} for t in targets]
    with pytest.raises(ValueError, match="iou_type"):
        coco_map(perfect, targets, "keypoints")
    with pytest.raises(ValueError, match="one of each per image"):
        coco_map(perfect[:1], targets)
    with pytest.raises(ValueError, match="'scores'"):
        coco_map([{k: v for k, v in p.items() if k != "scores"} for p in perfect], targets)
    with pytest.raises(ValueError, match=r"'boxes' must be \(N, 4\)"):
        coco_map([{**p, "boxes": p["boxes"][:, :3]} for p in perfect], targets)
    with pytest.raises(ValueError, match="predicted masks"):
        coco_map([{**p, "masks": p["masks"][:, :10]} for p in perfect], targets, "segm")


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(codec):
    heads = make_heads(codec).train()
    x, targets = scene()
    with torch.no_grad():
        y_hat = codec(x)["y_hat"]
    opt = torch.optim.Adam(heads.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(8):
        torch.manual_seed(0)  # the same RPN / RoI sampling every step
        loss = sum(heads.forward_latent(y_hat, (H, W), targets).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    assert history[-1] < 0.8 * history[0], history
