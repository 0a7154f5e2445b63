"""Where to cut EfficientNet-Lite0 for low rates: the fitted block transform at strides 4, 8 and 16,
before any training.

``python -m icm.train.cut_depth --out docs/results/cut-depth.json``

For each cut (stride 4: 4×4 blocks of the 24-channel feature; stride 8: 2×2 blocks of
the 40-channel one; stride 16: each position of the 112-channel one — ``y`` at stride
16 in all three), the standardised blocks of 240 training crops (two of each of 120
training photos: the train split, the wallpapers and the photo pool) are expanded on
their Karhunen–Loève basis, coefficient ``k`` rounded on a grid ``step·(F_k/mean F)^(-1/2)``
(``F_k``: the tail's Fisher information, as :func:`icm.train.calibrate.fit_block_transform`
sets it), and every coefficient given the empirical distribution of its training symbols.
On the held-out ``photo-crops`` (50) and ``labelme-crops`` (35) it reports the
zeroth-order entropy of the rounded coefficients in bits per pixel (no file overhead) and
the top-1 agreement of the network run on from the rebuilt feature with the uncompressed
network, for each grid step.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F

STEPS = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def cuts(bb) -> dict:
    """``{name: (head, rest, block)}`` of a stride-4 :class:`~icm.models.backbones.SplitBackbone`
    of EfficientNet-Lite0: the pixels-to-cut function, the cut-to-logits function and the
    block size that puts ``y`` at stride 16."""
    s8, s16, s32 = bb.tail.stages
    return {
        "stride 4": (bb.head, lambda f: bb.classifier(bb.tail(f)["2"]), 4),
        "stride 8": (lambda x: s8(bb.head(x)), lambda f: bb.classifier(s32(s16(f))), 2),
        "stride 16": (lambda x: s16(s8(bb.head(x))), lambda f: bb.classifier(s32(f)), 1),
    }


def _batched(fn, x: torch.Tensor, n: int = 16) -> torch.Tensor:
    return torch.cat([fn(x[i:i + n]) for i in range(0, len(x), n)])


@torch.no_grad()
def measure_cut(head, rest, p: int, train: torch.Tensor, held: torch.Tensor, sets: dict[str, slice],
                steps=STEPS, seed: int = 0) -> list[dict]:
    """Agreement and zeroth-order bpp of one cut at each grid step (see the module docstring)."""
    ft, fh = _batched(head, train), _batched(head, held)
    mu, sd = ft.mean((0, 2, 3), keepdim=True), ft.std((0, 2, 3), keepdim=True) + 1e-6
    blocks = (lambda f: F.pixel_unshuffle((f - mu) / sd, p)) if p > 1 else (lambda f: (f - mu) / sd)
    unblock = (lambda v: F.pixel_shuffle(v, p) * sd + mu) if p > 1 else (lambda v: v * sd + mu)
    vt = blocks(ft)
    d = vt.shape[1]
    _, basis = torch.linalg.eigh(torch.cov(vt.permute(0, 2, 3, 1).reshape(-1, d).T.double()))
    basis = basis.flip(1).float()
    coef = lambda v: torch.einsum("bdhw,de->behw", v, basis)  # noqa: E731
    back = lambda c: unblock(torch.einsum("behw,de->bdhw", c, basis))  # noqa: E731
    g = torch.Generator().manual_seed(seed)
    fisher = torch.zeros(d)
    for i in range(0, len(train), 8):
        c = coef(vt[i:i + 8]).requires_grad_(True)
        with torch.enable_grad():
            logp = F.log_softmax(rest(back(c)), 1)
            k = torch.multinomial(logp.exp().detach(), 1, generator=g)[:, 0]
            grad, = torch.autograd.grad(logp[torch.arange(len(k)), k].sum(), c)
        fisher += grad.pow(2).sum((0, 2, 3))
    weight = (fisher / fisher.mean()).clamp_min(1e-8).rsqrt()
    ct, ch = coef(vt), coef(blocks(fh))
    ref = _batched(lambda f: rest(f).argmax(1)[:, None], fh)[:, 0]
    pixels = held.shape[-2] * held.shape[-1]
    rows = []
    for step in steps:
        grid = (step * weight)[None, :, None, None]
        qt, qh = torch.round(ct / grid).long(), torch.round(ch / grid).long()
        bits = torch.zeros(len(held), dtype=torch.float64)
        for k in range(d):
            a, b = qt[:, k].flatten(), qh[:, k]
            lo, hi = int(min(a.min(), b.min())), int(max(a.max(), b.max()))
            pmf = torch.bincount(a - lo, minlength=hi - lo + 1).double() + 0.1
            bits += -torch.log2(pmf / pmf.sum())[b - lo].sum((1, 2))
        got = _batched(lambda c: rest(back(c.float())).argmax(1)[:, None], qh.float() * grid)[:, 0]
        agree = (got == ref).float()
        rows.append({"step": step, **{name: {"bpp": float(bits[s].mean()) / pixels, "agreement": float(agree[s].mean())}
                                      for name, s in sets.items()}})
    return rows


def main(argv=None) -> int:
    import argparse

    from ..data import five_crops, load_photo, photo_sources, to_tensor, wallpaper_photos
    from ..eval.datasets import labelme_crops, photo_crops
    from ..models.backbones import efficientnet_lite0
    from ..pool import pool_photos

    p = argparse.ArgumentParser(prog="python -m icm.train.cut_depth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--photos", type=int, default=120, help="training photos (two crops each)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    sources = list(photo_sources("train")) + list(wallpaper_photos()) + list(pool_photos())
    np.random.default_rng(0).shuffle(sources)
    train = torch.cat([to_tensor(c)[None] for s in sources[:a.photos] for c in five_crops(load_photo(s))[:2]])
    photo, labelme = [to_tensor(s.image)[None] for s in photo_crops()], [to_tensor(s.image)[None] for s in labelme_crops()]
    held = torch.cat(photo + labelme)
    sets = {"photo-crops": slice(0, len(photo)), "labelme-crops": slice(len(photo), len(held))}
    out = {"training_crops": len(train), "held_out": {k: s.stop - s.start for k, s in sets.items()}, "cuts": {}}
    for name, (head, rest, block) in cuts(efficientnet_lite0(True)).items():
        out["cuts"][name] = rows = measure_cut(head, rest, block, train, held, sets)
        for r in rows:
            print(f"{name}, grid {r['step']}: " + ", ".join(
                f"{k} {100 * v['agreement']:.0f}% at {v['bpp']:.3f} bpp" for k, v in r.items() if k != "step"), flush=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
