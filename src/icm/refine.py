"""Encoder-side latent refinement: spend encode time, not bits, for a better file.

An analysis transform predicts the latents in one pass; the file that
minimises the model's own rate–distortion cost for *this* image usually lies
a little way off.  :func:`refine_latents` starts at the predicted latents and
descends that cost directly with respect to them (Campos et al., "Content
adaptive optimization for neural image compression", CVPRW 2019), using
stochastic Gumbel annealing for the rounding (Yang, Bamler and Mandt,
"Improving inference for neural image compression", NeurIPS 2020): each value
is pulled towards its floor or ceiling by a soft, randomised choice whose
temperature falls to zero over the run.

The cost is the model's training objective (``model.refine_objective``):

* pixel models (``hyperprior``): ``bpp + λ·255²·MSE`` of the reconstruction;
* ``dicm``, for the receiver's task: ``λ·bpp + KL`` of the uncompressed
  network's class distribution against the one decoded from the latent
  (``classify``), or ``λ·bpp`` + the error of the tail's stage features inside
  the boxes the detector finds on the picture (``detect`` / ``segment``).  The
  sender has the picture, so it can run the whole network on it and check what
  the receiver will conclude; this costs the tail and a backward pass per step
  at the sender.

Only the encoder changes.  The result is coded with the same entropy models and
decoded by the same decoder; a refined file is an ordinary ``.icm`` file.  The
random choices of each image come from its own generator seeded by ``seed``, and
every image's cost is its own (Adam's steps are element-wise), so one image gives
one file on one machine whether it is refined alone or in a batch, and wherever
it stands in the batch.

Refinement never hands back a worse file than the analysis transform's: at the end
the plain and the refined latents are rounded as the coder rounds them and scored
with the same cost, and each image keeps the one that costs less.  An objective
whose distortion carries a ``keeps(ŷ)`` check (``dicm``: the receiver's top-1 class
is the uncompressed network's) ranks that check first, so a refined file never
loses a class decision the plain file had.  One that also carries a ``guard(ŷ)``
(``dicm``'s joint objective: how far the receiver's detections stray from those the
sender finds on the picture) keeps the plain latents wherever the refined ones would
raise that error without keeping a class decision more.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .layers.modes import eval_mode


DEFAULT_STEPS = 100
DEFAULT_LR = 5e-3
# The rounding's temperature falls linearly from the first to the second over the
# steps (a model's ``refine_tau`` overrides it).
DEFAULT_TAU = (0.52, 0.02)
# How the end of refinement picks between the plain and the refined latents (part of
# what decides a file, so a cached result of an older rule never answers).
SELECTION = "keeps, then detection guard and cost, hard-rounded"


def model_setting(model) -> dict:
    """What decides a refined file besides the steps: the model's step size
    (``refine_lr``, else :data:`DEFAULT_LR`), temperature schedule (``refine_tau``, else
    :data:`DEFAULT_TAU`) and default objective (``refine_default``, ``None`` for one
    objective), and the rule that picks plain or refined latents (:data:`SELECTION`)."""
    return {"lr": getattr(model, "refine_lr", DEFAULT_LR), "tau": tuple(getattr(model, "refine_tau", DEFAULT_TAU)),
            "objective": getattr(model, "refine_default", None), "selection": SELECTION}


def default_steps(model) -> int:
    """Refinement steps when none are named: the model's ``refine_steps``, else
    :data:`DEFAULT_STEPS`."""
    return int(getattr(model, "refine_steps", DEFAULT_STEPS))


def supports_refine(model) -> bool:
    """Whether ``model`` has a refinement objective (``refinable``): pixel models
    trained for ``R + λ·255²·MSE`` on a hyperprior, and the ``dicm`` family."""
    return bool(getattr(model, "refinable", False))


def refine_latents(
    model,
    x: Tensor,
    steps: int = DEFAULT_STEPS,
    lr: float | None = None,
    seed: int = 0,
    callback: Callable[[int], None] | None = None,
    objective: Callable | None = None,
    chunk: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Latents ``(y, z)`` of a batch that cost less to code at ``model.lmbda``.

    Args:
        model: a model for which :func:`supports_refine` is true.
        x: ``(B, C, H, W)`` in ``[0, 1]`` (any size; padding is added as in
            ``compress``, and only the real pixels count in the distortion).
        steps: gradient steps (Adam); ``0`` returns the analysis transform's latents.
        lr: Adam's step size (default: the model's ``refine_lr``, else
            :data:`DEFAULT_LR`); the rounding's temperature schedule is the model's
            ``refine_tau``, else :data:`DEFAULT_TAU`.
        seed: seed of the rounding noise (every image of the batch draws from its
            own generator with this seed).
        callback: called with the step number after every step of every chunk
            (progress bars).
        objective: ``x → (rate weight, distortion)`` to descend instead of
            ``model.refine_objective`` (e.g. ``dicm``'s objective for a detection task).
        chunk: images refined together in one forward and backward pass.  The
            default 1 gives each image exactly the file it gets alone: batched
            convolutions sum their gradients in another order, and a difference in
            the last bit of one gradient can move a rounded value.  On a CPU a chunk
            of 8 is also slower per image (``benchmarks/refine.py``); a GPU gains
            from larger chunks, at the price of that last-bit dependence.

    Returns:
        ``(y, z)`` to pass to ``model.latent.compress(y, z)``; ``z`` is ``None``
        for a latent without side information.
    """
    if not supports_refine(model):
        raise ValueError(f"model {getattr(model, 'model_name', type(model).__name__)!r} does not support "
                         "encoder-side refinement (it has no refinement objective)")
    if steps < 0:
        raise ValueError(f"refinement steps must be >= 0, got {steps}")
    if chunk < 1:
        raise ValueError(f"refinement chunk must be >= 1 images, got {chunk}")
    setting = model_setting(model)
    lr = lr if lr is not None else setting["lr"]
    tau = setting["tau"]
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            if steps == 0:
                with torch.no_grad():
                    y0 = model.analysis(model.pad(x))
                    return y0, model.latent.hyper_latent(y0)
            parts = [_refine(model, x[i: i + chunk], steps, lr, tau, seed, callback, objective)
                     for i in range(0, x.shape[0], chunk)]
        y = torch.cat([p[0] for p in parts])
        return y, (torch.cat([p[1] for p in parts]) if parts[0][1] is not None else None)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _refine(model, x, steps, lr, tau_range, seed, callback, objective):
    """:func:`refine_latents` on one chunk, from its own analysis latents (computed for
    the chunk alone: a batched analysis may differ in its last bits)."""
    h, w = x.shape[-2:]
    lat = model.latent
    rate_weight, distortion = (objective or model.refine_objective)(x)
    with torch.no_grad():
        # an objective that ran the analysis on its way hands its latents over
        y0 = getattr(distortion, "latents", None)
        y0 = y0 if y0 is not None else model.analysis(model.pad(x))
        z0 = lat.hyper_latent(y0)
    y = y0.clone().requires_grad_(True)
    z = z0.clone().requires_grad_(True) if z0 is not None else None
    gen = [torch.Generator().manual_seed(seed) for _ in range(x.shape[0])]
    opt = torch.optim.Adam([y] + ([z] if z is not None else []), lr=lr)
    with torch.enable_grad():
        for step in range(steps):
            tau = tau_range[1] + (tau_range[0] - tau_range[1]) * (1.0 - step / max(steps - 1, 1))
            y_hat, bits = lat.annealed(y, z, tau, gen)
            # each image's cost is its own: the sum only gathers them for one backward pass
            loss = (rate_weight * bits / (h * w) + distortion(y_hat)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if callback is not None:
                callback(step + 1)
    y, z = y.detach(), (z.detach() if z is not None else None)
    with torch.no_grad():
        take = _better(lat, (y, z), (y0, z0), rate_weight, distortion, h * w)

    def pick(refined: Tensor, plain: Tensor) -> Tensor:
        return torch.where(take.view((-1,) + (1,) * (refined.dim() - 1)), refined, plain)

    return pick(y, y0), (pick(z, z0) if z is not None else None)


def hard_rounded(lat, y: Tensor, z: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(ŷ, bits per item)`` of ``(y, z)`` rounded as the coder rounds them: the
    latent's annealed rounding at a vanishing temperature (its noise cannot move a
    value that is not within 1e-9 of a half-integer)."""
    return lat.annealed(y, z, 1e-9, [torch.Generator().manual_seed(0) for _ in range(y.shape[0])])


def _better(lat, refined, plain, rate_weight, distortion, pixels) -> Tensor:
    """Per image, whether the ``refined`` latents ``(y, z)`` are at least as good as the
    ``plain`` ones, both rounded as the coder rounds them.  A distortion may carry a
    ``keeps(ŷ)`` check, which ranks first (a kept decision is never traded away), and a
    ``guard(ŷ)``, a per-image error (``>= 0``) that the refined latents may not raise unless they
    keep a decision more.  Between the rest ``rate weight · bpp + distortion`` decides."""
    scores = []
    for y, z in (refined, plain):
        y_hat, bits = hard_rounded(lat, y, z)
        cost = rate_weight * bits / pixels + distortion(y_hat)
        keeps = distortion.keeps(y_hat) if hasattr(distortion, "keeps") else torch.ones_like(cost, dtype=torch.bool)
        scores.append((y_hat, keeps, cost))
    (y_r, k_r, c_r), (y_p, k_p, c_p) = scores
    tie = (k_r == k_p) & (c_r <= c_p)
    if hasattr(distortion, "guard") and bool(tie.any()):  # asked only where it decides
        g_r = distortion.guard(y_r)
        # a guard is an error >= 0: where the refined latents' is 0 the plain ones
        # cannot do better, so theirs is asked only where it decides
        if bool((tie & (g_r > 0)).any()):
            tie = tie & (g_r <= distortion.guard(y_p))
    return (k_r & ~k_p) | tie
