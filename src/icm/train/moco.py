"""Self-supervised pieces of the ``dicm`` recipe (SEEDS.md section B, stage 1
and 3): MoCo v2 with ContrastiveCrop.  Plain modules and functions; the
Lightning module that trains ``dicm`` drives them.

* MoCo v2 — He et al., "Momentum Contrast for Unsupervised Visual
  Representation Learning", CVPR 2020; Chen et al., "Improved Baselines with
  Momentum Contrastive Learning", arXiv 2003.04297::

      im_q → encoder_q → projector_q → q ─┐            (gradients)
      im_k → encoder_k → projector_k → k ─┼→ [q·k, q·queue] / T → CE(label 0)
             (momentum copy, no grads)    └→ enqueue(gather(k))

* ContrastiveCrop — Peng et al., "Crafting Better Contrastive Views for
  Siamese Representation Learning", CVPR 2022::

      image → net → layer4 (C,h,w) → Σ_C → min-max → upsample → > 0.1 → box
      crop size as RandomResizedCrop; crop centre = box_lo + (box_hi - box_lo)·Beta(0.6, 0.6)

Schedule (SEEDS.md B): plain crops for the warm-up epochs, then boxes
recomputed from the current network every ``every`` (20) epochs::

    for epoch in range(epochs):
        views.warmup = epoch < warmup_epochs
        if should_refresh(epoch, warmup_epochs, every):
            views.update_boxes(feature_fn)           # feature_fn: net in eval mode
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

Box = tuple[float, float, float, float]
WHOLE: Box = (0.0, 0.0, 1.0, 1.0)

__all__ = ["ContrastiveCrop", "ContrastiveCropViews", "MoCo", "concat_all_gather", "heatmap_box",
           "heatmap_boxes", "moco_v2_augment", "moco_v2_photometric", "should_refresh"]


# ---------------------------------------------------------------- MoCo v2
def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` (B, …) of every rank along dim 0 (no gradient).

    The identity when ``torch.distributed`` is not initialised.  Every rank
    must pass the same shape (use ``drop_last=True``)."""
    if not _distributed():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


class MoCo(nn.Module):
    """MoCo v2: a query encoder trained by InfoNCE against a momentum key
    encoder and a queue of past keys (see the module docstring).

    Args:
        encoder: images (B, 3, H, W) → vectors (B, feat_dim).  Becomes
            ``encoder_q``; parameters with ``requires_grad=False`` stay frozen
            and their key copies stay bit-identical (``lerp`` of equal values).
        feat_dim: width of the encoder output.
        dim: width of the projected, L2-normalised embedding.
        hidden: width of the MLP projection head (MoCo v2: 2048).
        queue_size: number of negative keys K (any size; writes wrap around).
        momentum: m in ``θ_k ← m·θ_k + (1 - m)·θ_q``.
        temperature: T of InfoNCE (SEEDS.md B: 0.2).

    Shuffle-BN: under DDP the key batch is shuffled across ranks before the key
    encoder and unshuffled after, so that BatchNorm statistics of a key never
    come from the same sub-batch as its query (the reference's defence against
    the network "cheating" through BN).  On a single device there is nothing to
    shuffle across and the leak remains; use SyncBatchNorm / split BN if that
    matters.  Buffers (BN running statistics) are not momentum-averaged: the
    key encoder keeps its own, as in the reference.
    """

    def __init__(self, encoder: nn.Module, feat_dim: int, dim: int = 128, hidden: int = 2048,
                 queue_size: int = 65536, momentum: float = 0.999, temperature: float = 0.2) -> None:
        super().__init__()
        if queue_size < 1 or min(feat_dim, dim, hidden) < 1:
            raise ValueError("MoCo: feat_dim, dim, hidden and queue_size must be positive")
        if not 0.0 <= momentum <= 1.0 or temperature <= 0:
            raise ValueError(f"MoCo: need 0 ≤ momentum ≤ 1 and temperature > 0, got {momentum}, {temperature}")
        self.momentum, self.temperature = momentum, temperature
        self.encoder_q = encoder
        self.projector_q = nn.Sequential(nn.Linear(feat_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))
        self.encoder_k = copy.deepcopy(encoder)
        self.projector_k = copy.deepcopy(self.projector_q)
        for p in self._key_params():
            p.requires_grad_(False)
        self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _query_params(self) -> list[Tensor]:
        return [*self.encoder_q.parameters(), *self.projector_q.parameters()]

    def _key_params(self) -> list[Tensor]:
        return [*self.encoder_k.parameters(), *self.projector_k.parameters()]

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θ_k ← m·θ_k + (1 - m)·θ_q`` over all parameters, frozen ones included."""
        for pk, pq in zip(self._key_params(), self._query_params(), strict=True):
            pk.lerp_(pq.detach(), 1.0 - self.momentum)  # exact when pk == pq (frozen params)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (n, dim), already normalised, at ``queue_ptr`` with wrap-around."""
        size = self.queue.shape[1]
        keys = keys[-size:]  # a batch larger than the queue keeps its newest keys
        cols = (self.queue_ptr + torch.arange(keys.shape[0], device=keys.device)) % size
        self.queue[:, cols] = keys.T.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    @torch.no_grad()
    def _keys(self, im_k: Tensor) -> Tensor:
        if not _distributed():
            return F.normalize(self.projector_k(self.encoder_k(im_k)), dim=1)
        # Shuffle-BN (reference algorithm): permute the global batch, identically on all ranks.
        b = im_k.shape[0]
        gathered = concat_all_gather(im_k)
        perm = torch.randperm(gathered.shape[0], device=im_k.device)
        dist.broadcast(perm, src=0)
        mine = perm.view(-1, b)[dist.get_rank()]
        k = F.normalize(self.projector_k(self.encoder_k(gathered[mine])), dim=1)
        unperm = torch.argsort(perm).view(-1, b)[dist.get_rank()]
        return concat_all_gather(k)[unperm]

    def forward(self, im_q: Tensor, im_k: Tensor) -> dict[str, Tensor]:
        """Args: two augmented views (B, 3, H, W) of the same images.

        Returns: ``loss`` (scalar InfoNCE), ``logits`` (B, 1+K) already divided
        by T, ``labels`` (B,) zeros.  In training mode the key encoder is
        momentum-updated before the keys are computed and the (all-gathered)
        keys are enqueued afterwards; in eval mode neither happens."""
        if im_q.shape[0] != im_k.shape[0]:
            raise ValueError(f"MoCo: query and key batches differ: {im_q.shape[0]} vs {im_k.shape[0]}")
        q = F.normalize(self.projector_q(self.encoder_q(im_q)), dim=1)
        if self.training:
            self.momentum_update()
        k = self._keys(im_k)
        l_pos = (q * k).sum(1, keepdim=True)
        l_neg = q @ self.queue.clone().detach()
        logits = torch.cat([l_pos, l_neg], 1) / self.temperature
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        loss = F.cross_entropy(logits, labels)
        if self.training:
            self.enqueue(concat_all_gather(k))
        return {"loss": loss, "logits": logits, "labels": labels}


# ---------------------------------------------------------------- augmentation
def _clamp01(x: Tensor) -> Tensor:  # a named function, so the transform pickles into spawned workers
    return x.clamp(0.0, 1.0)


def moco_v2_photometric(size: int = 224) -> v2.Compose:
    """MoCo v2 augmentation after the crop: colour jitter (p 0.8), greyscale
    (p 0.2), Gaussian blur (p 0.5, kernel 23 at 224 px, σ ∈ [0.1, 2]),
    horizontal flip.  Float (3, H, W) in [0, 1] → same, still in [0, 1]."""
    kernel = max(3, round(23 * size / 224)) | 1
    return v2.Compose([
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
        v2.RandomHorizontalFlip(),
        v2.Lambda(_clamp01),
    ])


def moco_v2_augment(size: int = 224, scale: tuple[float, float] = (0.2, 1.0)) -> v2.Compose:
    """The full MoCo v2 view: RandomResizedCrop(size, scale) + :func:`moco_v2_photometric`.
    Float (3, H, W) in [0, 1] → (3, size, size) in [0, 1]; normalisation is the backbone's."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=scale, antialias=True), moco_v2_photometric(size)])


# ---------------------------------------------------------------- ContrastiveCrop
def heatmap_boxes(features: Tensor, image_size: tuple[int, int], threshold: float = 0.1) -> Tensor:
    """Batched :func:`heatmap_box`: features (N, C, h, w) → boxes (N, 4) as
    normalised (x0, y0, x1, y1); a constant map gives the whole image."""
    if features.dim() != 4:
        raise ValueError(f"heatmap_boxes: expected features (N, C, h, w), got {tuple(features.shape)}")
    heat = features.float().sum(1, keepdim=True)
    lo = heat.amin((2, 3), keepdim=True)
    span = heat.amax((2, 3), keepdim=True) - lo
    heat = F.interpolate((heat - lo) / span.clamp_min(1e-12), size=tuple(image_size),
                         mode="bilinear", align_corners=False)[:, 0]
    hot = heat > threshold
    rows, cols, varies = hot.any(2).cpu(), hot.any(1).cpu(), (span.flatten() > 1e-12).cpu()
    boxes = torch.tensor(WHOLE).repeat(len(hot), 1)
    H, W = image_size
    for i in range(len(hot)):
        r, c = rows[i].nonzero()[:, 0].tolist(), cols[i].nonzero()[:, 0].tolist()
        if varies[i] and r:
            boxes[i] = torch.tensor([c[0] / W, r[0] / H, (c[-1] + 1) / W, (r[-1] + 1) / H])
    return boxes


def heatmap_box(feature: Tensor, image_size: tuple[int, int], threshold: float = 0.1) -> Box:
    """ContrastiveCrop's semantic-aware localisation for one image.

    Args:
        feature: (C, h, w) last conv stage (layer4) of the current network.
        image_size: (H, W) the heatmap is upsampled to (bilinear).
        threshold: on the min-max normalised heatmap (SEEDS.md B: 0.1).
    Returns:
        (x0, y0, x1, y1) in [0, 1], fractions of width / height, x1 and y1
        exclusive; (0, 0, 1, 1) when the map is constant."""
    if feature.dim() != 3:
        raise ValueError(f"heatmap_box: expected a feature (C, h, w), got {tuple(feature.shape)}")
    return tuple(heatmap_boxes(feature[None], image_size, threshold)[0].tolist())


def _check_box(box: Sequence[float]) -> Box:
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 <= x1 <= 1.0 and 0.0 <= y0 <= y1 <= 1.0):
        raise ValueError(f"box must be normalised (x0, y0, x1, y1), 0 ≤ x0 ≤ x1 ≤ 1 and 0 ≤ y0 ≤ y1 ≤ 1; got {box}")
    return x0, y0, x1, y1


class ContrastiveCrop:
    """RandomResizedCrop whose centre is drawn inside a box (Peng et al. 2022).

    Crop area ∈ scale·H·W and aspect ratio log-uniform in ``ratio`` as in
    torchvision; the centre per axis is ``lo + (hi - lo)·Beta(α, α)`` inside
    the box, then the crop is shifted to lie within the image.  (The authors'
    code instead draws inside the box ∩ feasible centres; the two differ only
    for crops that would cross the border.)  Without a box it is a plain
    RandomResizedCrop.

    Args:
        size: output side; scale, ratio: as RandomResizedCrop.
        alpha: Beta(α, α) parameter, 0 < α ≤ 4 (0.6: U-shaped, favours the box edges).
        seed: seeds a private generator (reproducible, but duplicated across
            DataLoader workers); ``None`` uses torch's global RNG, which
            DataLoader reseeds per worker.
    """

    def __init__(self, size: int = 224, scale: tuple[float, float] = (0.2, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), alpha: float = 0.6, seed: int | None = None) -> None:
        if not 0 < alpha <= 4:
            raise ValueError(f"ContrastiveCrop: alpha must be in (0, 4], got {alpha}")
        if not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ContrastiveCrop: bad scale {scale} or ratio {ratio}")
        self.size, self.scale, self.ratio, self.alpha = size, scale, ratio, alpha
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def _rand(self, n: int = 1) -> list[float]:
        return torch.rand(n, generator=self.generator, dtype=torch.float64).tolist()

    def _beta(self) -> float:
        while True:  # Jöhnk's algorithm: Beta with a seedable generator
            u, v = self._rand(2)
            x, y = u ** (1 / self.alpha), v ** (1 / self.alpha)
            if 0 < x + y <= 1:
                return x / (x + y)

    def sample_size(self, H: int, W: int) -> tuple[int, int]:
        """Crop (h, w) as torchvision's RandomResizedCrop (10 tries, then a ratio-clamped whole image)."""
        lr = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            a, r = self._rand(2)
            area = H * W * (self.scale[0] + (self.scale[1] - self.scale[0]) * a)
            aspect = math.exp(lr[0] + (lr[1] - lr[0]) * r)
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= W and 0 < h <= H:
                return h, w
        if W / H < self.ratio[0]:
            return min(H, round(W / self.ratio[0])), W
        if W / H > self.ratio[1]:
            return H, min(W, round(H * self.ratio[1]))
        return H, W

    def sample_center(self, H: int, W: int, box: Sequence[float]) -> tuple[float, float]:
        """Crop centre (cy, cx) in pixels, inside ``box`` (normalised x0, y0, x1, y1)."""
        x0, y0, x1, y1 = _check_box(box)
        return H * (y0 + (y1 - y0) * self._beta()), W * (x0 + (x1 - x0) * self._beta())

    def sample_rect(self, H: int, W: int, box: Sequence[float] | None = None) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a crop within the (H, W) image; ``box=None``: plain placement."""
        h, w = self.sample_size(H, W)
        if box is None:
            t, l = self._rand(2)
            return min(int(t * (H - h + 1)), H - h), min(int(l * (W - w + 1)), W - w), h, w
        cy, cx = self.sample_center(H, W, box)
        return min(max(round(cy - h / 2), 0), H - h), min(max(round(cx - w / 2), 0), W - w), h, w

    def __call__(self, img: Tensor, box: Sequence[float] | None = None) -> Tensor:
        """img (3, H, W) in [0, 1] → (3, size, size) in [0, 1]."""
        top, left, h, w = self.sample_rect(img.shape[-2], img.shape[-1], box)
        return TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True).clamp(0.0, 1.0)


def should_refresh(epoch: int, warmup_epochs: int, every: int) -> bool:
    """True when boxes must be recomputed before 0-based ``epoch``: at the end
    of the warm-up and every ``every`` epochs after (SEEDS.md B: every 20)."""
    if every < 1:
        raise ValueError(f"should_refresh: every must be ≥ 1, got {every}")
    return epoch >= warmup_epochs and (epoch - warmup_epochs) % every == 0


def _image(item) -> Tensor:
    img = item[0] if isinstance(item, (tuple, list)) else item
    if not (isinstance(img, Tensor) and img.dim() == 3 and img.shape[0] == 3):
        raise ValueError("ContrastiveCropViews: base items must be (3, H, W) tensors or tuples starting with one")
    return img


class ContrastiveCropViews(Dataset):
    """Two MoCo v2 views (q, k) per image of ``base``, cropped by ContrastiveCrop.

    Args:
        base: items are float (3, H, W) images in [0, 1] (sizes may vary), or
            tuples whose first element is one.
        size, scale, alpha, seed: of the :class:`ContrastiveCrop` crop step.
        warmup: plain RandomResizedCrop placement while True.
        photometric: what follows the crop (default :func:`moco_v2_photometric`).
        box_size: side the full image is resized to for :meth:`update_boxes`.

    Boxes and the warm-up flag live in shared memory and are updated in
    place, so persistent DataLoader workers see new values.
    """

    def __init__(self, base: Dataset, size: int = 224, scale: tuple[float, float] = (0.2, 1.0), *,
                 alpha: float = 0.6, warmup: bool = True, seed: int | None = None,
                 photometric: Callable[[Tensor], Tensor] | None = None, box_size: int = 224) -> None:
        self.base, self.box_size = base, box_size
        self.crop = ContrastiveCrop(size, scale, alpha=alpha, seed=seed)
        self.photometric = moco_v2_photometric(size) if photometric is None else photometric
        self.boxes = torch.tensor(WHOLE).repeat(len(base), 1).share_memory_()
        self._warmup = torch.tensor([warmup]).share_memory_()

    @property
    def warmup(self) -> bool:
        return bool(self._warmup.item())

    @warmup.setter
    def warmup(self, value: bool) -> None:
        self._warmup.fill_(bool(value))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        img = _image(self.base[i])
        box = None if self.warmup else self.boxes[i].tolist()
        return self.photometric(self.crop(img, box)), self.photometric(self.crop(img, box))

    def set_boxes(self, boxes: Tensor | Sequence[Sequence[float]]) -> None:
        """Replace all boxes: (N, 4) normalised (x0, y0, x1, y1)."""
        boxes = torch.as_tensor(boxes, dtype=torch.float32)
        if boxes.shape != self.boxes.shape:
            raise ValueError(f"set_boxes: expected shape {tuple(self.boxes.shape)}, got {tuple(boxes.shape)}")
        for b in boxes.tolist():
            _check_box(b)
        self.boxes.copy_(boxes)

    @torch.no_grad()
    def update_boxes(self, feature_fn: Callable[[Tensor], Tensor], batch_size: int = 64,
                     threshold: float = 0.1, device: torch.device | str | None = None) -> Tensor:
        """Recompute every box from the heatmap of the whole image.

        Args:
            feature_fn: images (B, 3, box_size, box_size) in [0, 1] → last-stage
                features (B, C, h, w); put the network in eval mode first.
            batch_size: images per call; threshold: of :func:`heatmap_box`;
            device: where the images are sent.
        Returns:
            The new boxes (N, 4), also stored."""
        out = []
        for start in range(0, len(self), batch_size):
            imgs = [_image(self.base[i]) for i in range(start, min(start + batch_size, len(self)))]
            batch = torch.stack([TF.resize(x, [self.box_size] * 2, antialias=True) for x in imgs])
            feats = feature_fn(batch.clamp(0, 1).to(device) if device is not None else batch.clamp(0, 1))
            out.append(heatmap_boxes(feats.cpu(), (self.box_size, self.box_size), threshold))
        boxes = torch.cat(out) if out else self.boxes.clone()
        self.set_boxes(boxes)
        return boxes
