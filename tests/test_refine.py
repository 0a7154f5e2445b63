"""Encoder-side latent refinement (``icm.refine``, ``icm compress --refine``,
``hyperprior+refine`` in ``icm eval``): a cheaper file at the model's own
rate–distortion cost, decoded by the unchanged decoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from icm import bitstream, codec
from icm.data import load_photo, to_tensor
from icm.errors import IcmError
from icm.eval.sweep import _split_refine, resolve_codec
from icm.refine import hard_rounded, refine_latents

from conftest import gradient_image, requires_weights

# The detection objectives are checked on pictures of shapes, with the heads that know them.
pytestmark = pytest.mark.usefixtures("shapes_heads")


def _photo_crop(h: int = 64, w: int = 96) -> torch.Tensor:
    # A textured crop of a photo (not one the hyperprior was trained on).
    img = load_photo("skimage:astronaut")[100 : 100 + h, 180 : 180 + w]
    return to_tensor(np.ascontiguousarray(img))[None]


def _rd_cost(model, x: torch.Tensor, data: bytes) -> tuple[float, float, float]:
    """``(bpp of the whole file, PSNR, bpp + λ·255²·MSE)`` of a coded file."""
    x_hat = codec.decode(data, model=model)["x_hat"]
    mse = torch.mean((x_hat - x) ** 2).item()
    bpp = 8 * len(data) / (x.shape[-2] * x.shape[-1])
    return bpp, 10 * math.log10(1 / mse), bpp + model.lmbda * 255**2 * mse


@requires_weights
def test_refinement_lowers_the_real_rate_distortion_cost():
    model = codec.get_model("hyperprior", 2)
    x = _photo_crop(128, 128)
    plain = codec.encode(model, x)[0]
    refined = codec.encode(model, x, refine=60)[0]
    b0, p0, j0 = _rd_cost(model, x, plain)
    b1, p1, j1 = _rd_cost(model, x, refined)
    # Measured on the coded files, header included: the cost must drop clearly,
    # not by noise (0.4245 -> 0.4008 here: 4.7% fewer bits and +0.29 dB).
    assert j1 < 0.97 * j0, (b0, p0, j0, b1, p1, j1)
    assert refined != plain


@requires_weights
def test_refined_file_is_an_ordinary_file_and_deterministic():
    model = codec.get_model("hyperprior", 1)
    x = _photo_crop(40, 56)
    a = codec.encode(model, x, refine=10)[0]
    b = codec.encode(model, x, refine=10)[0]
    assert a == b  # seeded rounding noise: one image, one file
    f = bitstream.unpack(a)
    assert (f.header.model_id, f.header.quality, f.header.height, f.header.width) == (1, 1, 40, 56)
    out = codec.decode(a)
    assert out["x_hat"].shape == (1, 3, 40, 56)


def test_latent_compress_takes_the_encoders_own_z(tiny_model):
    x = gradient_image(64, 64)
    y = tiny_model.analysis(tiny_model.pad(x))
    with torch.no_grad():
        z = tiny_model.latent.h_a(y)
    assert tiny_model.latent.compress(y, z).strings == tiny_model.latent.compress(y).strings
    other = tiny_model.latent.compress(y, z + 3.0).strings
    assert other != tiny_model.latent.compress(y).strings


def test_zero_steps_returns_the_analysis_latents(tiny_model):
    x = gradient_image(30, 50)
    y, z = refine_latents(tiny_model, x, steps=0)
    with torch.no_grad():
        y0 = tiny_model.analysis(tiny_model.pad(x))
        assert torch.equal(y, y0)
        assert torch.equal(z, tiny_model.latent.h_a(y0))


def test_refinement_leaves_the_model_untouched(tiny_model):
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    flags = [p.requires_grad for p in tiny_model.parameters()]
    training = tiny_model.training
    refine_latents(tiny_model, gradient_image(32, 32), steps=3)
    assert all(torch.equal(before[k], v) for k, v in tiny_model.state_dict().items())
    assert [p.requires_grad for p in tiny_model.parameters()] == flags
    assert tiny_model.training == training


def test_batch_refinement_codes_every_image(tiny_model):
    x = torch.cat([gradient_image(32, 48), torch.flip(gradient_image(32, 48), dims=[-1])])
    files = codec.encode(tiny_model, x, refine=3)
    assert len(files) == 2 and files[0] != files[1]
    for i, data in enumerate(files):
        assert codec.decode(data, model=tiny_model)["x_hat"].shape == (1, 3, 32, 48)


def test_models_without_a_pixel_objective_refuse():
    model = codec.get_model("bai2022-fmnist", 9)
    with pytest.raises(IcmError, match="does not support refinement"):
        codec.encode(model, gradient_image(28, 28), refine=5)
    with pytest.raises(ValueError, match="does not support encoder-side refinement"):
        refine_latents(model, gradient_image(28, 28), steps=5)


def test_negative_steps_are_refused(tiny_model):
    with pytest.raises(IcmError, match=">= 0"):
        codec.encode(tiny_model, gradient_image(16, 16), refine=-1)


# -- command line ---------------------------------------------------------------


def _png(path, h=40, w=56):
    Image.fromarray(codec.to_uint8(_photo_crop(h, w))).save(path)
    return path


@requires_weights
def test_cli_compress_refine_round_trips(run_cli, tmp_path):
    src = _png(tmp_path / "a.png")
    r = run_cli("compress", "-q", "1", "--refine", "5", src, "-o", tmp_path / "a.icm")
    assert r.code == 0, r.err
    assert "hyperprior q1, 56x40" in r.out
    r = run_cli("decompress", tmp_path / "a.icm", "-o", tmp_path / "b.png")
    assert r.code == 0, r.err
    assert np.array(Image.open(tmp_path / "b.png")).shape == (40, 56, 3)


def test_cli_refine_on_a_model_without_it_is_one_line(run_cli, tmp_path):
    src = _png(tmp_path / "a.png")
    r = run_cli("compress", "-m", "bai2022-fmnist", "--refine", "5", src)
    assert r.code == 2
    assert len(r.err_lines) == 1 and "does not support refinement" in r.err_lines[0]
    assert not (tmp_path / "a.icm").exists()


@pytest.mark.parametrize("value", ["-1", "ten"])
def test_cli_refine_rejects_bad_counts(run_cli, tmp_path, value):
    r = run_cli("compress", "--refine", value, _png(tmp_path / "a.png"))
    assert r.code == 2
    assert "--refine" in r.err and "Traceback" not in r.err


# -- eval codec names ---------------------------------------------------------------


def test_refine_codec_names_parse():
    assert _split_refine("hyperprior") == ("hyperprior", None, None)
    assert _split_refine("hyperprior+refine") == ("hyperprior", 0, None)  # the model's own default
    assert _split_refine("hyperprior+refine:25") == ("hyperprior", 25, None)
    assert _split_refine("dicm-lite0+refine@classify") == ("dicm-lite0", 0, "classify")
    assert _split_refine("dicm-lite0+refine:4@detect") == ("dicm-lite0", 4, "detect")
    for bad in ("hyperprior+refine:0", "hyperprior+refine:x", "hyperprior+sharpen", "hyperprior+refine:",
                "dicm-lite0+refine@", "dicm-lite0+sharpen@classify"):
        with pytest.raises(IcmError, match="the one option is"):
            _split_refine(bad)


@requires_weights
def test_refine_codec_is_its_own_sweep_entry():
    plain, refined = resolve_codec("hyperprior"), resolve_codec("hyperprior+refine:20")
    assert refined.name == "hyperprior+refine:20" and refined.model == "hyperprior" and refined.refine == 20
    assert refined.settings["refine_steps"] == 20 and "refine_steps" not in plain.settings
    assert refined.state_hash(1) == plain.state_hash(1)  # the same weights
    with pytest.raises(IcmError, match="does not support refinement"):
        resolve_codec("bai2022-fmnist+refine")


@requires_weights
def test_a_refined_codec_can_name_the_task_it_keeps():
    plain, refined = resolve_codec("dicm-lite0+refine"), resolve_codec("dicm-lite0+refine@classify")
    assert refined.name == "dicm-lite0+refine@classify" and refined.refine_for == "classify"
    assert refined.settings["refine_for"] == "classify" and "refine_for" not in plain.settings
    assert "for classify" in refined.label
    with pytest.raises(IcmError, match="not for task 'psnr'"):
        resolve_codec("dicm-lite0+refine@psnr")
    with pytest.raises(IcmError, match="refines for pixel fidelity"):
        resolve_codec("hyperprior+refine@classify")


# -- dicm: the task objective ---------------------------------------------------


def _task_cost(model, x: torch.Tensor, data: bytes) -> tuple[float, float, float]:
    """``(bpp of the whole file, KL, λ·bpp + KL)`` of a coded ``dicm`` file: KL of the
    uncompressed network's class distribution against the one decoded from it."""
    import torch.nn.functional as F

    logits = codec.analyze(data, model=model, task="classify")["output"]
    with torch.no_grad():
        log_p = F.log_softmax(model.classify_pixels(x), dim=1)
    kl = float((log_p.exp() * (log_p - F.log_softmax(logits, dim=1))).sum())
    bpp = 8 * len(data) / (x.shape[-2] * x.shape[-1])
    return bpp, kl, model.lmbda * bpp + kl


@requires_weights
def test_dicm_refinement_lowers_the_task_cost_of_the_real_file():
    from icm.data import centre_crop

    model = codec.get_model("dicm-lite0", 4)
    # A held-out photo (never trained on), at the evaluation scale.
    x = to_tensor(centre_crop(load_photo("skimage:coffee")))[None]
    plain = codec.encode(model, x)[0]
    refined = codec.encode(model, x, refine=40, task="classify")[0]
    b0, k0, j0 = _task_cost(model, x, plain)
    b1, k1, j1 = _task_cost(model, x, refined)
    # From the coded files, header included. Measured: 0.474 bpp, KL 0.049 ->
    # 0.421 bpp, KL 0.003 (cost 0.476 -> 0.382): fewer bits and a closer answer.
    assert j1 < 0.9 * j0, (b0, k0, j0, b1, k1, j1)
    assert b1 < 0.95 * b0 and k1 < 0.5 * k0, (b0, k0, b1, k1)
    f = bitstream.unpack(refined)
    assert (f.header.model_id, f.header.quality) == (9, 4)
    assert codec.encode(model, x, refine=40, task="classify")[0] == refined  # seeded: one image, one file


@requires_weights
def test_dicm_refinement_keeps_a_factorized_latent_without_side_information():
    model = codec.get_model("dicm-lite0", 3)
    x = _photo_crop(64, 96)
    y, z = refine_latents(model, x, steps=3)
    assert z is None and y.shape == (1, 384, 4, 6)
    with torch.no_grad():
        y0 = model.analysis(model.pad(x))
    assert not torch.equal(y, y0)
    assert refine_latents(model, x, steps=0)[1] is None


def _shapes_picture(seed: int = 4242) -> torch.Tensor:
    from icm.tasks.synthetic import render

    image, *_ = render(np.random.default_rng([seed, 7]), (160, 160), 3, 4)  # a seed no split uses
    return to_tensor(image)[None]


@requires_weights
def test_dicm_refinement_for_detection_lowers_its_own_cost_on_the_real_file():
    model = codec.get_model("dicm-lite0", 4)
    heads = codec.heads_for(model, "segment")
    x = _shapes_picture()
    from icm.tasks.refine import detection_objective

    rate_weight, distortion = detection_objective(x, model, heads)

    def cost(data: bytes) -> tuple[float, float, float]:
        y_hat = codec.decode(data, model=model, pixels=False)["y_hat"]
        with torch.no_grad():
            d = float(distortion(y_hat))
        bpp = 8 * len(data) / (160 * 160)
        return bpp, d, rate_weight * bpp + d

    plain = codec.encode(model, x)[0]
    refined = codec.encode(model, x, refine=30, task="segment")[0]
    (b0, d0, j0), (b1, d1, j1) = cost(plain), cost(refined)
    # Whole files. Measured: 0.463 bpp, distortion 2.30 (cost 2.72) -> 0.526 bpp,
    # distortion 1.05 (cost 1.52): the boxes' features bought with the background's bits.
    assert j1 < 0.9 * j0 and d1 < d0, (b0, d0, j0, b1, d1, j1)
    out = codec.analyze(refined, model=model, task="segment")["output"][0]
    assert len(out["boxes"]) > 0 and out["masks"].shape[-2:] == (160, 160)


@requires_weights
def test_refinement_for_a_task_the_model_cannot_keep_is_refused():
    x = gradient_image(32, 32)
    with pytest.raises(IcmError, match="refines for pixel fidelity, not for task 'detect'"):
        codec.encode(codec.get_model("hyperprior", 1), x, refine=2, task="detect")
    dicm = codec.get_model("dicm-lite0", 3)
    with pytest.raises(IcmError, match="not for task 'psnr'"):
        codec.encode(dicm, x, refine=2, task="psnr")
    from icm.tasks.refine import detection_objective

    with pytest.raises(ValueError, match="heads built on this codec"):
        detection_objective(x, dicm, None)
    with pytest.raises(ValueError, match="detection_objective"):
        dicm.refine_objective(x, task="detect")


@requires_weights
def test_cli_compress_refine_for_segment(run_cli, tmp_path):
    path = tmp_path / "shapes.png"
    Image.fromarray(codec.to_uint8(_shapes_picture())).save(path)
    r = run_cli("compress", "-m", "dicm-lite0", "-q", "3", "--refine", "3", "--refine-for", "segment", path)
    assert r.code == 0, r.err
    assert bitstream.unpack((tmp_path / "shapes.icm").read_bytes()).header.model_id == 9
    r = run_cli("compress", "-m", "dicm-lite0", "--refine-for", "detect", path)
    assert r.code == 2 and len(r.err_lines) == 1 and "give --refine N as well" in r.err_lines[0]


# -- per-image generators, the joint objective ------------------------------------


def test_annealed_rounding_draws_each_item_from_its_own_generator():
    from icm.entropy import annealed_round

    v = torch.randn(3, 4, 5, 6) * 3
    gens = [torch.Generator().manual_seed(7) for _ in range(3)]
    batched = annealed_round(v, 0.3, gens)
    alone = torch.cat([annealed_round(v[i: i + 1], 0.3, [torch.Generator().manual_seed(7)]) for i in range(3)])
    # the same draws (vectorised arithmetic may differ in the last bit with the tensor's size)
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
    # one shared generator draws the batch as one block: item 1 then differs from item 1 alone
    shared = annealed_round(v, 0.3, torch.Generator().manual_seed(7))
    assert (shared[1] - alone[1]).abs().max() > 0.1
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        annealed_round(v, 0.3, gens[:2])


@requires_weights
def test_a_refined_file_does_not_depend_on_its_batch_mates():
    model = codec.get_model("dicm-lite0", 3)
    img = load_photo("skimage:astronaut")
    x = torch.stack([to_tensor(np.ascontiguousarray(img[r: r + 64, c: c + 96]))
                     for r, c in ((60, 140), (300, 20), (200, 300))])
    alone = [codec.encode(model, x[i: i + 1], refine=3)[0] for i in range(3)]
    assert codec.encode(model, x, refine=3) == alone
    assert codec.encode(model, x.flip(0), refine=3)[::-1] == alone
    assert len(set(alone)) == 3


@requires_weights
def test_joint_refinement_keeps_classification_and_detection_on_the_real_file():
    from icm.tasks.refine import detection_objective

    model = codec.get_model("dicm-lite0", 3)
    heads = codec.heads_for(model, "detect")
    x = _shapes_picture()
    _, feature = detection_objective(x, model, heads)

    def terms(data: bytes) -> tuple[float, float, float]:
        bpp, kl, _ = _task_cost(model, x, data)
        with torch.no_grad():
            d = float(feature(codec.decode(data, model=model, pixels=False)["y_hat"]))
        return bpp, kl, d

    plain = codec.encode(model, x)[0]
    joint = codec.encode(model, x, refine=model.refine_steps)[0]  # the default objective: all tasks
    only_classify = codec.encode(model, x, refine=model.refine_steps, task="classify")[0]
    (b0, k0, d0), (b1, k1, d1), (b2, k2, d2) = terms(plain), terms(joint), terms(only_classify)
    j = [model.lmbda * b + k + d for b, k, d in ((b0, k0, d0), (b1, k1, d1))]
    # Whole files, header included. Measured (8 steps): plain 0.377 bpp, KL 2.40, feature
    # distortion 2.77; joint 0.382 bpp, KL 0.047, 2.09; classify alone 0.377 bpp, KL 0.127, 2.70.
    assert j[1] < 0.8 * j[0], (b0, k0, d0, b1, k1, d1)
    assert k1 < 0.5 * k0 and d1 < 0.9 * d0, (k0, d0, k1, d1)
    assert d1 < 0.9 * d2, (d1, d2)  # what the detector reads, kept only by the joint objective


def _plain_latents(model, x):
    # image by image, as refinement computes them (a batched analysis may differ in its last bits)
    with torch.no_grad():
        y0 = torch.cat([model.analysis(model.pad(x[i: i + 1])) for i in range(x.shape[0])])
        z0 = [model.latent.hyper_latent(y0[i: i + 1]) for i in range(x.shape[0])]
        return y0, (torch.cat(z0) if z0[0] is not None else None)


def _coded(model, y, z):
    """``ŷ`` as the coder rounds ``(y, z)``."""
    with torch.no_grad():
        return hard_rounded(model.latent, y, z)[0]


def test_refinement_that_overshoots_hands_back_the_plain_latents(tiny_model):
    # Adam at a step size of 50 throws the latents far off: by the model's own cost,
    # rounded as the coder rounds, that is worse than the analysis transform's answer,
    # and the safeguard keeps the plain latents for every image of the batch.
    x = torch.cat([gradient_image(32, 32), torch.flip(gradient_image(32, 32), dims=[-1])])
    y0, z0 = _plain_latents(tiny_model, x)
    y, z = refine_latents(tiny_model, x, steps=4, lr=50.0)
    assert torch.equal(y, y0) and torch.equal(z, z0)
    # a sane step size is kept (it lowers the cost): the safeguard is not always "plain"
    y, _ = refine_latents(tiny_model, x, steps=4)
    assert not torch.equal(y, y0)


def _checked_refinement(model, x, name: str, check):
    """Latents refined from ``x`` (and the plain ones) with the model's own objective,
    its distortion carrying ``check(ŷ, plain ŷ)`` as attribute ``name`` (``keeps`` or
    ``guard``)."""
    y0, z0 = _plain_latents(model, x)
    rate_weight, base = model.refine_objective(x)
    plain_rounded = _coded(model, y0, z0)

    def distortion(y_hat):
        return base(y_hat)

    setattr(distortion, name, lambda y_hat: check(y_hat, plain_rounded))
    y, _ = refine_latents(model, x, steps=6, objective=lambda _x: (rate_weight, distortion))
    return y, y0


def _same(y_hat, plain):
    return (y_hat - plain).abs().amax(dim=(1, 2, 3)) < 1e-4


def test_refinement_never_trades_away_a_decision_the_plain_file_keeps(tiny_model):
    # A distortion whose descent lowers the cost but whose keeps() check only the
    # plain latents pass: the check ranks first, so the plain latents come back; with
    # a check that only refined latents pass, the refined ones do.
    x = gradient_image(32, 32)
    y, y0 = _checked_refinement(tiny_model, x, "keeps", _same)
    assert torch.equal(y, y0)
    y, y0 = _checked_refinement(tiny_model, x, "keeps", lambda y_hat, plain: ~_same(y_hat, plain))
    assert not torch.equal(y, y0)


def test_refinement_never_raises_a_guarded_error(tiny_model):
    # A guard(ŷ) (an error >= 0) that the refined latents raise above the plain file's
    # (here: the distance from the plain rounded latents) keeps the plain latents even
    # though the refined ones cost less; a guard they lower (but not to 0, where the
    # plain file's would not be asked) lets them through.
    x = gradient_image(32, 32)

    def distance(y_hat, plain):
        return (y_hat - plain).abs().sum(dim=(1, 2, 3))

    y, y0 = _checked_refinement(tiny_model, x, "guard", distance)
    assert torch.equal(y, y0)
    y, y0 = _checked_refinement(tiny_model, x, "guard", lambda y_hat, plain: 1 / (1 + distance(y_hat, plain)))
    assert not torch.equal(y, y0)


def test_a_guard_at_zero_is_not_compared_with_the_plain_file(tiny_model):
    # A guard is an error >= 0: refined latents whose guard is 0 cannot be beaten on it,
    # so the plain latents' guard is not asked (one receiver pass fewer); where the
    # refined guard is above 0 both are asked.
    x = gradient_image(32, 32)
    asked = []

    def counted(value):
        def guard(y_hat, plain):
            asked.append(bool(_same(y_hat, plain).all()))
            return torch.full((y_hat.shape[0],), float(value))
        return guard

    y, y0 = _checked_refinement(tiny_model, x, "guard", counted(0))
    assert not torch.equal(y, y0) and asked == [False]
    asked.clear()
    y, y0 = _checked_refinement(tiny_model, x, "guard", counted(1))
    assert not torch.equal(y, y0) and asked == [False, True]


def test_eval_mode_restores_each_submodules_own_mode():
    from icm.layers.modes import eval_mode

    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Dropout(), torch.nn.Linear(2, 2)))
    net.train()
    net[1].eval()  # a frozen part inside a training module stays frozen afterwards
    before = [m.training for m in net.modules()]
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == before == [True, True, False, False, False]
    with pytest.raises(RuntimeError), eval_mode(net):
        raise RuntimeError("restored on the way out of an error too")
    assert [m.training for m in net.modules()] == before


@requires_weights
def test_joint_objective_hands_over_the_analysis_latents_bit_for_bit():
    from icm.tasks.refine import detection_objective, joint_objective

    model = codec.get_model("dicm-lite0", 3).eval()
    x = to_tensor(np.ascontiguousarray(load_photo("skimage:chelsea")[:150, :170]))[None]  # padded by the codec
    with torch.no_grad():
        y0 = model.analysis(model.pad(x))
    heads = codec.get_heads(model)
    for make in (joint_objective, detection_objective):
        assert torch.equal(make(x, model, heads)[1].latents, y0)


@requires_weights
@pytest.mark.parametrize("quality", [3, 6])
def test_dicm_joint_refinement_keeps_the_plain_files_top1(quality):
    from icm.tasks.refine import joint_objective

    model = codec.get_model("dicm-lite0", quality)
    img = load_photo("skimage:chelsea")
    x = torch.stack([to_tensor(np.ascontiguousarray(img[r: r + 160, c: c + 160])) for r, c in ((0, 0), (140, 250))])
    _, distortion = joint_objective(x, model, codec.get_heads(model))
    y0, z0 = _plain_latents(model, x)
    y, z = refine_latents(model, x, steps=model.refine_steps)
    with torch.no_grad():
        plain, refined = _coded(model, y0, z0), _coded(model, y, z)
        kept0, kept = distortion.keeps(plain), distortion.keeps(refined)
        guard0, guard = distortion.guard(plain), distortion.guard(refined)
    # every crop whose plain file gives the uncompressed network's class still does, and
    # the receiver's detections stray no further from the sender's unless the class is won
    assert bool((kept | ~kept0).all()), (kept0.tolist(), kept.tolist())
    assert bool(((guard <= guard0) | (kept & ~kept0)).all()), (guard0.tolist(), guard.tolist())
    if quality == 3:  # measured: refined latents for both crops (at 6 the plain ones cost less)
        assert not torch.equal(y[:1], y0[:1]) and not torch.equal(y[1:], y0[1:])


def test_last_pass_runs_the_receiver_once_per_latent_outside_autograd():
    from icm.tasks.refine import last_pass

    calls = []
    fn = last_pass(lambda t: calls.append(1) or t * 2)
    a, b = torch.ones(2), torch.zeros(2)
    c = torch.full((2,), 3.0)
    with torch.no_grad():
        assert torch.equal(fn(a), 2 * a) and torch.equal(fn(a), 2 * a)
        assert len(calls) == 1
        assert torch.equal(fn(b), b) and len(calls) == 2  # another tensor is computed afresh
        assert torch.equal(fn(a), 2 * a) and len(calls) == 2  # the last two are kept
        fn(c)  # a third pushes out the one computed first (a)
        assert len(calls) == 3 and torch.equal(fn(b), b) and len(calls) == 3
        fn(a)
        assert len(calls) == 4
    fn(b)  # with gradients on, every call runs (a cached graph would be stale)
    fn(b)
    assert len(calls) == 6


def test_detection_miss_counts_what_the_receiver_loses_or_invents():
    from icm.tasks.refine import detection_miss

    def dets(boxes, labels, scores):
        return {"boxes": torch.tensor(boxes, dtype=torch.float).reshape(-1, 4),
                "labels": torch.tensor(labels), "scores": torch.tensor(scores)}

    sender = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2], [0.9, 0.8])
    assert detection_miss(sender, sender) == 0.0
    # a box shifted by half its width: IoU 1/3 → 2/3 missed (and it still overlaps enough
    # to be no invented box: IoU ≥ 0.5 is needed for that, so it counts once more)
    shifted = dets([[5, 0, 15, 10], [20, 20, 40, 40]], [1, 2], [0.9, 0.8])
    assert detection_miss(sender, shifted) == pytest.approx(2 / 3 + 1)
    # the wrong class is no match; a box below the score threshold is not there
    relabelled = dets([[0, 0, 10, 10], [20, 20, 40, 40]], [3, 2], [0.9, 0.8])
    assert detection_miss(sender, relabelled) == pytest.approx(1 + 1)
    faint = dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 1], [0.9, 0.8, 0.2])
    assert detection_miss(sender, faint) == 0.0
    invented = dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 1], [0.9, 0.8, 0.6])
    assert detection_miss(sender, invented) == pytest.approx(1.0)
    assert detection_miss(sender, dets([], [], [])) == 2.0
