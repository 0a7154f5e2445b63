"""``dicm`` (Tang, Yi, Wang 2025): gnConv, the RE module, the codec on a split
backbone, classification from the bitstream with no pixels, the four training
stages, recipes and ``icm analyze`` / ``icm decompress`` on its files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from icm import codec
from icm.layers.fixed_point import FixedPointNet
from icm.layers.gnconv import GlobalLocalFilter, GnConv, HorBlock
from icm.models import Compressed, create_model, list_models, model_info
from icm.data import SKIMAGE_TRAIN_PHOTOS
from icm.models.dicm import DICM, QUALITIES, RedundancyElimination
from icm.train.calibrate import fit_block_transform, fit_prior

from conftest import PHOTOS, gradient_image, random_image

DICM_NAMES = [n for n in list_models() if n.startswith("dicm")]
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "dicm").glob("*.yaml"))
# Narrow codecs so that every configuration runs in a second or two on one thread.
SMALL = {
    "dicm": dict(re_dims=(16, 16, 16, 16), dims=(256, 32, 32), M=32, N=16, hyper_dim=32, hyper_heads=2,
                 filter_size=(8, 8)),
    "dicm-lite0": dict(re_dims=(32,), re_depths=(), dims=(24, 48, 48), M=48, N=16, hyper_dim=32, hyper_heads=2,
                       filter_size=(8, 8), pretrained_backbone=False),
    "dicm-lite0-s8": dict(re_dims=(32,), re_depths=(), dims=(40, 48, 48), M=48, N=16, hyper_dim=32, hyper_heads=2,
                          filter_size=(8, 8), pretrained_backbone=False),
}
SMALL["dicm-lite0-s8-cutmix"] = SMALL["dicm-lite0-s8"]  # the same network, other weights


def make_dicm(name: str = "dicm-lite0", quality: int = 4, seed: int = 0, busy: bool = True, **kw) -> DICM:
    """Seeded narrow model in eval mode; ``busy`` scales y up so that it carries many symbols."""
    torch.manual_seed(seed)
    model = create_model(name, quality=quality, pretrained=False, **{**SMALL[name], **kw}).eval()
    if busy:
        with torch.no_grad():
            [m for m in model.g_a if isinstance(m, torch.nn.Conv2d)][-1].weight.mul_(30.0)
            if hasattr(model.latent, "h_a"):
                model.latent.h_a[-1].weight.mul_(30.0)
    return model


# -- layers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_gnconv_orders_split_channels_and_keep_shape(order):
    torch.manual_seed(0)
    g = GnConv(32, order)
    assert g.dims == [32 // 2**i for i in reversed(range(order))]
    assert len(g.widen) == order - 1
    x = torch.randn(2, 32, 9, 13, requires_grad=True)
    y = g(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


def test_gnconv_rejects_indivisible_width():
    with pytest.raises(ValueError, match="divisible by 8"):
        GnConv(20, order=4)
    with pytest.raises(ValueError, match="even"):
        GlobalLocalFilter(7)


def test_global_filter_with_unit_weights_is_the_identity_between_its_norms():
    torch.manual_seed(0)
    f = GlobalLocalFilter(8, size=(6, 6))
    with torch.no_grad():
        f.weight.zero_()
        f.weight[..., 0] = 1.0  # every frequency multiplied by 1 + 0j
        f.local.weight.zero_()
        f.local.weight[:, :, 1, 1] = 1.0  # depth-wise delta
    x = torch.randn(2, 8, 11, 14)  # another size than stored: the weight is resampled
    want = f.norm_out(f.norm_in(x))
    torch.testing.assert_close(f(x), want, atol=1e-5, rtol=1e-5)


def test_horblock_starts_near_identity_with_layer_scale():
    torch.manual_seed(0)
    b = HorBlock(16, order=3)
    x = torch.randn(1, 16, 8, 8)
    assert (b(x) - x).abs().max() < 1e-3  # γ = 1e-6 at initialisation (HorNet)
    assert b.gamma1.flatten().tolist() == pytest.approx([1e-6] * 16)


def test_fixed_point_pixel_shuffle_is_exact_and_batch_independent():
    torch.manual_seed(0)
    h_s = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.LeakyReLU(), nn.Conv2d(8, 32, 3, padding=1),
                        nn.PixelShuffle(2), nn.LeakyReLU(), nn.Conv2d(8, 6, 3, padding=1))
    fp = FixedPointNet(h_s, act_bits=10)
    z = torch.randint(-5, 6, (3, 4, 5, 7)).float()
    out = fp(z)
    assert out.shape == (3, 6, 10, 14) and torch.equal(out, torch.round(out))
    assert torch.equal(torch.cat([fp(z[i : i + 1]) for i in range(3)]), out)
    torch.testing.assert_close(out / 2**10, h_s(z).double(), atol=0.05, rtol=0.01)


def test_re_module_shapes_and_rounded_bottleneck():
    torch.manual_seed(0)
    re = RedundancyElimination(24, dims=(16, 16, 16, 20), depths=(1, 1, 2), kernel_size=11).eval()
    f = torch.randn(2, 24, 16, 24)
    out = re(f)
    assert out["f_re"].shape == f.shape and out["likelihoods"].shape == (2, 20, 2, 3)
    with torch.no_grad():
        re.mean.fill_(0.5)
        re.std.fill_(2.0)
    out = re(f)
    b = re.encoder((f - 0.5) / 2.0)
    b_hat, _ = re.prior(b)
    assert torch.equal(b_hat, torch.round(b))  # eval: rounding
    torch.testing.assert_close(out["f_re"], re.unstandardise(re.decoder(b_hat)))
    blocks = [m for m in re.encoder if type(m).__name__ == "MetaFormerBlock"]
    assert len(blocks) == 4 and blocks[0].token_mixer.attn[-1].kernel_size == (11, 11)
    assert blocks[0].layer_scale1.scale.flatten()[0].item() == pytest.approx(1e-6)


# -- models ----------------------------------------------------------------------------------


def test_registered_configurations():
    assert set(DICM_NAMES) == {"dicm", "dicm-lite0", "dicm-lite0-s8", "dicm-lite0-s8-cutmix"}
    assert {n: model_info(n).model_id for n in DICM_NAMES} == {"dicm": 6, "dicm-lite0": 9, "dicm-lite0-s8": 10,
                                                               "dicm-lite0-s8-cutmix": 11}
    # id 7: dicm-lite0's files from before its qualities ran from small files to large;
    # id 8: from before qualities 1 and 2 came first
    from icm.models._registry import current_id

    assert model_info("dicm-lite0").retired_ids == {7: {1: 6, 2: 5, 3: 4, 4: 3}, 8: {1: 3, 2: 4, 3: 5, 4: 6}}
    assert [current_id(7, q) for q in (1, 2, 3, 4, 9)] == [(9, 6), (9, 5), (9, 4), (9, 3), (7, 9)]
    assert [current_id(8, q) for q in (1, 2, 3, 4)] == [(9, 3), (9, 4), (9, 5), (9, 6)]
    assert current_id(9, 1) == (9, 1) and current_id(6, 1) == (6, 1)
    assert model_info("dicm").qualities == (1, 2, 3, 4) and model_info("dicm-lite0").qualities == (1, 2, 3, 4, 5, 6)
    assert model_info("dicm-lite0-s8").qualities == (1, 2, 3, 4) and not model_info("dicm-lite0-s8").retired_ids
    assert model_info("dicm-lite0-s8-cutmix").qualities == (1, 2, 3)
    for n in DICM_NAMES:
        info = model_info(n)
        assert info.tasks == ("classify",) and not info.pixel_decoder
    assert QUALITIES[4] == 0.08  # the paper's rate weight


def test_paper_configuration():
    torch.manual_seed(0)
    m = create_model("dicm", quality=4, pretrained=False)
    assert m.backbone.name == "resnet50" and m.backbone.cut_channels == 256
    assert (m.cut_stride, m.y_stride, m.stride, m.M) == (4, 16, 64, 192)
    convs = [c for c in m.re.encoder if isinstance(c, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (256, 128, 1), (128, 128, 2), (128, 128, 2), (128, 192, 2)]
    orders = [len(b.gnconv.dims) for b in m.g_a if isinstance(b, HorBlock)]
    assert orders == [2, 3, 4] and isinstance(m.g_a[5].gnconv.gate, GlobalLocalFilter)
    assert [c.out_channels for c in m.g_a if isinstance(c, nn.Conv2d)] == [128, 192, 192]
    vit = m.latent.h_a[1].blocks[0]
    assert vit.attn.num_heads == 6 and vit.attn.qkv.in_features == 384
    assert len(model_info("dicm").description) > 10 and len(m.class_names) == 1000


def test_lite0_s8_configuration_codes_2x2_blocks_of_the_stride_8_cut():
    from icm.models.dicm import LITE0_S8_QUALITIES

    m = create_model("dicm-lite0-s8", quality=3, pretrained=False, pretrained_backbone=False)
    assert m.backbone.name == "efficientnet_lite0_s8" and m.backbone.cut_channels == 40
    assert (m.cut_stride, m.y_stride, m.stride, m.M, m.codec_patch, m.entropy) == (8, 16, 16, 160, 2, "factorized")
    proj = m.g_a[-1]
    assert (proj.in_channels, proj.out_channels, proj.kernel_size, proj.stride) == (40, 160, (2, 2), (2, 2))
    assert m.lmbda == LITE0_S8_QUALITIES[3] == 6.0
    lambdas = [LITE0_S8_QUALITIES[q] for q in model_info("dicm-lite0-s8").qualities]
    assert all(a > b for a, b in zip(lambdas, lambdas[1:])), lambdas


def test_lite0_s8_cutmix_is_the_same_network_with_its_own_lambdas():
    from icm.models.dicm import LITE0_S8_CUTMIX_QUALITIES, LITE0_S8_QUALITIES

    a = create_model("dicm-lite0-s8", quality=3, pretrained=False, pretrained_backbone=False)
    b = create_model("dicm-lite0-s8-cutmix", quality=3, pretrained=False, pretrained_backbone=False)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert b.lmbda == a.lmbda == 6.0
    lambdas = [LITE0_S8_CUTMIX_QUALITIES[q] for q in model_info("dicm-lite0-s8-cutmix").qualities]
    assert all(x > y for x, y in zip(lambdas, lambdas[1:])), lambdas
    assert LITE0_S8_CUTMIX_QUALITIES == {q: LITE0_S8_QUALITIES[q] for q in (1, 2, 3)}  # its qualities 1–3's λ


@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_lite0_s8_analysis_from_bitstream_equals_eval_forward_exactly(size):
    model = make_dicm("dicm-lite0-s8", quality=2)
    x = random_image(*size, seed=3, batch=2)
    out = model(x)
    c = model.compress(x)
    assert model.num_sections == 1 and all(len(s) == 1 for s in c.strings)
    assert torch.equal(model.analyze(c), out["logits"])
    h, w = size
    assert out["f_hat"].shape[-2:] == (-(-h // 8), -(-w // 8)) and out["y_hat"].shape[-2:] == (-(-h // 16), -(-w // 16))
    assert sum(len(b) for s in c.strings for b in s) > 20  # y carries symbols


@pytest.mark.parametrize("name", ["dicm", "dicm-lite0", "dicm-lite0-s8"])
def test_forward_backward_every_parameter_gets_a_gradient(name):
    model = make_dicm(name, busy=False).train()
    x = random_image(64, 64, seed=1, batch=2)
    out = model(x)
    side = 64 // model.cut_stride
    assert out["f_hat"].shape == out["f"].shape == (2, model.backbone.cut_channels, side, side)
    side = 64 // model.y_stride
    assert out["y_hat"].shape == (2, model.M, side, side) and out["logits"].shape == (2, 1000)
    loss = (out["f_hat"] - out["f_re"]).square().mean() + out["logits"].square().mean()
    loss = loss + sum(-torch.log2(v).mean() for v in out["likelihoods"].values()) - out["re_likelihoods"].log().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing[:5]


@pytest.mark.parametrize("entropy,sections", [("factorized", 1), ("hyperprior", 2)])
@pytest.mark.parametrize("size", [(64, 64), (97, 131), (31, 20)])
def test_analysis_from_bitstream_equals_eval_forward_exactly(size, entropy, sections):
    model = make_dicm(entropy=entropy)
    x = random_image(*size, seed=2, batch=2)
    out = model(x)
    c = model.compress(x)
    assert model.num_sections == sections and len(out["likelihoods"]) == sections
    assert len(c.strings) == 2 and all(len(s) == sections for s in c.strings)
    assert torch.equal(model.analyze(c), out["logits"])
    # one file alone: the same decoded latent; the tail's float arithmetic may
    # take another path for another batch size
    alone = Compressed([c.strings[1]], c.image_size)
    y1 = model.latent.decompress(alone.strings, model.latent_shape(alone.image_size))
    assert torch.equal(y1[0], out["y_hat"][1])
    torch.testing.assert_close(model.analyze(alone)[0], out["logits"][1], atol=1e-5, rtol=1e-5)
    h, w = size
    assert out["f_hat"].shape[-2:] == (-(-h // 4), -(-w // 4))


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    """Random images with spatial correlation (blurred noise), in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size // 4, size // 4, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def test_block_transform_fit_decorrelates_weights_by_fisher_and_calibrates_the_prior():
    torch.manual_seed(0)
    model = create_model("dicm-lite0", quality=4, pretrained=False,
                         **{**SMALL["dicm-lite0"], "M": 384, "hyper_dim": 32, "entropy": "hyperprior"}).eval()
    assert (model.codec_patch, model.y_stride, model.stride) == (4, 16, 32)
    model.re.init_identity(64.0)  # rounding in the RE: at most 1/128 of a standard deviation
    images = _smooth_images(24, 64, seed=1)
    info = fit_block_transform(model, images, step=2.0)
    assert info["kept_share"] == pytest.approx(1.0)  # M = 24·4² keeps every coefficient
    with torch.no_grad():
        f = model.re(model.head_features(images))["f_re"]
        s = model.re.standardise(f)
        y = model.encode_features(f)
        # the coefficients of the fitted images are uncorrelated ...
        flat = y.permute(1, 0, 2, 3).reshape(384, -1)
        live = flat.std(1) > 1e-3
        corr = torch.corrcoef(flat[live])
        off = corr - torch.diag(torch.diag(corr))
        assert float(off.abs().max()) < 0.05
        # ... and g_s inverts g_a (the HorNet blocks still near the identity; the
        # decoder's bias is one per channel, the blocks' means one per position)
        back = model.re.standardise(model.decode_features(y))
        assert float((back - s).square().mean() / s.square().mean()) < 0.02
    # each coefficient's grid is step·(F_k / mean F)^(-1/2): F_k·grid_k² is the same for all
    grid = 1.0 / model.g_a[-1].weight.flatten(1).norm(dim=1)
    fisher = info["fisher"]
    ok = fisher > fisher.max() * 1e-6
    product = fisher[ok] * grid[ok].square()
    torch.testing.assert_close(product, torch.full_like(product, 4.0 * float(fisher.mean())), rtol=1e-3, atol=0)
    # the hyper-decoder starts as one Gaussian per channel of y: its std and mean
    out = model.latent.h_s(torch.zeros(1, model.N, 1, 1))[..., 0, 0]
    scales, means = out.chunk(2, dim=1)
    torch.testing.assert_close(scales.flatten(), y.std(dim=(0, 2, 3)), atol=0.05 * float(y.std()), rtol=0.05)
    torch.testing.assert_close(means.flatten(), y.mean(dim=(0, 2, 3)), atol=0.05 * float(y.std()), rtol=0.05)
    with pytest.raises(ValueError, match="codec_patch"):
        fit_block_transform(make_dicm(codec_patch=0), images)


def test_re_identity_init_rounds_finely_and_needs_a_stageless_module():
    re = RedundancyElimination(24, dims=(32,), depths=())
    re.init_identity(4.0)
    f = torch.randn(2, 24, 6, 7)
    with torch.no_grad():
        err = re.eval()(f)["f_re"] - f
    assert 0.02 < float(err.abs().max()) <= 0.125 + 1e-6  # half a grid step of 1/4
    with pytest.raises(ValueError, match="without stages"):
        RedundancyElimination(24, dims=(32, 32), depths=(1,)).init_identity(4.0)


def test_layer_scale_sets_every_codec_horblock():
    model = make_dicm(layer_scale=0.1, busy=False)
    blocks = [m for m in [*model.g_a, *model.g_s] if isinstance(m, HorBlock)]
    assert len(blocks) == 6
    assert all(float(b.gamma1.flatten()[0]) == pytest.approx(0.1) for b in blocks)
    assert float(make_dicm(busy=False).g_a[0].gamma2.flatten()[0]) == pytest.approx(1e-6)


def test_no_pixel_decoder():
    model = make_dicm()
    c = model.compress(random_image(32, 32, seed=3))
    with pytest.raises(ValueError, match="no pixel decoder"):
        model.decompress(c, pixels=True)
    assert set(model.decompress(c, pixels=False)) == {"y_hat"}
    with pytest.raises(ValueError, match="does not run task 'detect'"):
        model.analyze(c, task="detect")


def test_lite0_bitstream_keeps_the_uncompressed_networks_prediction_when_trained_to():
    """The codec path is the uncompressed network when RE and codec are identities:
    the tail sees ``f`` itself, so the logits must match the unsplit network."""
    model = make_dicm(busy=False)
    x = random_image(64, 64, seed=4)
    f = model.head_features(x)
    torch.testing.assert_close(model.classify_features(f), model.classify_pixels(x))


def test_load_shipped_takes_everything_but_the_lite0_backbone():
    model = make_dicm(busy=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    other = make_dicm(seed=1, busy=False)
    other.load_shipped(copy.deepcopy(state))
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())
    del state["g_a.3.weight"]
    with pytest.raises(RuntimeError, match="g_a.3.weight"):
        other.load_shipped(state)



def test_factorized_latent_codes_y_alone_with_a_fitted_density():
    from icm.latent import FactorizedLatent

    torch.manual_seed(0)
    lat = FactorizedLatent(3, upsample=2).eval()
    y = torch.randn(2, 3, 4, 6) * torch.tensor([0.3, 2.0, 6.0])[:, None, None]
    before = -torch.log2(lat(y)["likelihoods"]["y"]).mean().item()
    bits = lat.fit(torch.randn(64, 3, 8, 8) * torch.tensor([0.3, 2.0, 6.0])[:, None, None], steps=300, lr=3e-2)
    out = lat(y)
    after = -torch.log2(out["likelihoods"]["y"]).mean().item()
    # discretised Gaussians of σ 0.3, 2, 6 carry about 0.3, 2.9 and 4.6 bits: 2.6 on average
    assert 2.3 < bits < 3.2 and after < before, (bits, before, after)
    strings = lat.compress(y)
    assert len(strings.strings) == 2 and all(len(s) == 1 for s in strings.strings)
    assert torch.equal(lat.decompress(strings.strings, (2, 3)), out["y_hat"])
    with pytest.raises(ValueError, match="hyper-latent"):
        lat.compress(y, torch.zeros(1))


def test_dicm_fit_prior_lowers_the_rate_of_a_factorized_model():
    model = make_dicm(busy=True)
    assert model.entropy == "factorized" and model.stride == model.y_stride == 16
    images = _photo_batch(6, 64, seed=3)
    rate = lambda: sum(-torch.log2(v).sum() for v in model(images)["likelihoods"].values()).item()  # noqa: E731
    with torch.no_grad():
        before = rate()
        fit_prior(model, images, steps=400)
        after = rate()
    assert after < 0.85 * before, (before, after)
    with pytest.raises(ValueError, match="factorized"):
        fit_prior(make_dicm(entropy="hyperprior"), images)


# -- training stages -----------------------------------------------------------------------------


def _module(stage: int, **kw):
    from icm.train.dicm import DicmModule

    model = make_dicm(busy=False).train()
    moco = {"queue": 64, "dim": 16, "hidden": 32, "momentum": 0.99}
    return DicmModule(model, stage, moco=moco, batch_size=4, max_steps=10, **kw)


def _train(module, batch, steps: int, lr: float):
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    module.train()
    # With one batch repeated, enqueued keys would be copies of the positives;
    # keep the initial negatives so the objective stays the same.
    queue = module.moco.queue.clone() if module.moco is not None else None
    losses = []
    for _ in range(steps):
        if queue is not None:
            module.moco.queue.copy_(queue)
        opt.zero_grad()
        loss = module.loss(batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _photo_batch(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    from icm.data import PhotoCrops

    it = iter(PhotoCrops(PHOTOS, size=size, seed=seed))
    return torch.stack([next(it) for _ in range(n)])


@pytest.mark.parametrize("stage", [2, 4])
def test_stage_lowers_its_loss(stage):
    torch.manual_seed(0)
    module = _module(stage)
    learning = {id(p) for m in module._learning for p in m.parameters()}
    assert all(p.requires_grad == (id(p) in learning) for p in module.model.parameters())
    batch = _photo_batch()
    with torch.no_grad():
        module.eval()
        before = module.loss(batch)["loss"].item()
    frozen = {k: v.clone() for k, v in module.model.backbone.state_dict().items()}
    _train(module, batch, steps=10, lr=3e-3)
    with torch.no_grad():
        module.eval()
        after = module.loss(batch)["loss"].item()
    assert after < 0.9 * before, (before, after)
    # the backbone (BatchNorm statistics included) did not move
    assert all(torch.equal(v, module.model.backbone.state_dict()[k]) for k, v in frozen.items())



@pytest.mark.parametrize("stage", [1, 3])
def test_contrastive_stage_lowers_infonce(stage):
    torch.manual_seed(0)
    module = _module(stage, train_parts=("re",)) if stage == 3 else _module(stage)
    q = _photo_batch(4, seed=1)
    batch = (q, q.flip(-1))  # two views of the same crops

    # training-mode losses (BatchNorm on batch statistics, as MoCo trains), same negatives each step
    losses = _train(module, batch, steps=8, lr=1e-3)
    assert losses[-1] < 0.8 * losses[0], losses
    if stage == 3:
        assert "rate" in module.loss(batch) and not any(
            p.requires_grad for p in module.model.backbone.parameters())



def test_lightning_fit_trains_the_codec_in_training_mode():
    """Models come from create_model in eval mode and Lightning keeps the modes it
    finds: the module must switch its learning parts to training mode itself, or
    the latents are rounded and the encoder gets no gradient."""
    import lightning as L
    from torch.utils.data import DataLoader

    from icm.train.dicm import DicmModule

    torch.manual_seed(0)
    model = make_dicm(busy=False)
    assert not model.g_a.training
    module = DicmModule(model, 4, batch_size=2, max_steps=2)
    seen = []

    class Watch(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            m = pl_module.model
            seen.append((m.g_a.training, m.latent.training, m.backbone.training, m.re.training,
                         float(m.g_a[-1].weight.grad.abs().sum())))

    before = model.g_a[-1].weight.detach().clone()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    trainer = L.Trainer(max_steps=2, callbacks=[Watch()], logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(_photo_batch(4, 64), batch_size=2))
    assert len(seen) == 2 and all(s[:4] == (True, True, False, False) and s[4] > 0 for s in seen), seen
    assert not torch.equal(model.g_a[-1].weight, before)
    assert all(torch.equal(v, model.backbone.state_dict()[k]) for k, v in frozen.items())

def test_stage4_can_train_the_analysis_transform_alone():
    """``train: [g_a]``: the encoder learns against a frozen decoder and entropy model
    (whose noisy quantisation still runs in training mode, so g_a gets a gradient)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from icm.errors import IcmError
    from icm.train.dicm import DicmModule

    torch.manual_seed(0)
    model = make_dicm(busy=False)
    module = DicmModule(model, 4, batch_size=2, max_steps=2, train_parts=["g_a"],
                        loss={"re_mse": 0.0, "stage_mse": [0.0, 0.0, 0.0], "kl": 1.0})
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"g_a"}
    module.train()
    assert model.g_a.training and model.latent.training and not model.g_s.training
    fixed = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("g_a.")}
    before = model.g_a[-1].weight.detach().clone()
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(_photo_batch(4, 64), batch_size=2))
    assert not torch.equal(model.g_a[-1].weight, before)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in fixed.items())
    with pytest.raises(IcmError, match=r"\[g_a\]"):
        DicmModule(make_dicm(busy=False), 4, train_parts=["g_s"])


def test_stage4_annealed_quantisation_trains_on_refinements_soft_rounding():
    from icm.train.dicm import DicmModule

    torch.manual_seed(0)
    model = make_dicm(busy=False)
    module = DicmModule(model, 4, batch_size=2, max_steps=10, train_parts=["g_a"],
                        loss={"re_mse": 0.0, "stage_mse": [0.0, 0.0, 0.0], "kl": 1.0,
                              "quant": "annealed", "tau": [0.5, 0.05]})
    module.train()
    x = _photo_batch(2, 64)
    terms = module.loss(x)
    terms["loss"].backward()
    assert float(model.g_a[-1].weight.grad.abs().sum()) > 0
    # the soft-rounded ŷ is not on the integers; the rate is that of the same ŷ, in bits per pixel
    y_hat = module._annealed_forward(x)["y_hat"]
    assert (y_hat - y_hat.round()).abs().max() > 1e-3
    assert 0 < float(terms["bpp"]) < 64
    # the same step draws the same noise (resumable); evaluation codes as the file does
    torch.testing.assert_close(module._annealed_forward(x)["y_hat"], y_hat)
    module.eval()
    with torch.no_grad():
        assert float(module.loss(x)["bpp"]) > 0


def test_mixed_pictures_are_mixtures_of_the_batch_and_the_teacher_sees_them():
    from icm.errors import IcmError
    from icm.train.dicm import DicmModule, mix_pictures

    x = torch.stack([torch.full((3, 20, 30), float(v)) for v in (0.0, 1.0, 2.0, 3.0)])
    up = mix_pictures(x, {"kind": "mixup", "alpha": 1.0}, 7)
    # each picture a convex mixture a·x_i + (1 − a)·x_j of two pictures of the batch
    assert torch.equal(up, mix_pictures(x, {"kind": "mixup", "alpha": 1.0}, 7))
    assert not torch.equal(up, mix_pictures(x, {"kind": "mixup", "alpha": 1.0}, 8))
    assert bool((up.amin((1, 2, 3)) == up.amax((1, 2, 3))).all())
    assert float(up.min()) >= 0 and float(up.max()) <= 3
    cut = mix_pictures(x, {"kind": "cutmix", "alpha": 1.0}, 7)
    for i in range(4):
        values = set(cut[i].unique().tolist())
        assert float(i) in values or len(values) == 1  # a box of another picture pasted in x_i
        assert values <= {0.0, 1.0, 2.0, 3.0}
        pasted = cut[i] != x[i]
        if pasted.any():  # one axis-aligned box, the same on every channel
            rows, cols = pasted[0].any(1).nonzero(), pasted[0].any(0).nonzero()
            box = pasted[0, int(rows.min()):int(rows.max()) + 1, int(cols.min()):int(cols.max()) + 1]
            assert bool(box.all()) and torch.equal(pasted[0], pasted[1])
    assert torch.equal(mix_pictures(x[:1], {"kind": "cutmix"}, 7), x[:1])
    # mosaic: every pixel keeps its place (nothing rescaled); which picture it comes from is
    # constant on four quarters meeting at one point of the middle half, the top-left one its own
    where = torch.arange(40 * 40, dtype=torch.float64).view(1, 1, 40, 40)
    x = (torch.arange(8, dtype=torch.float64).view(8, 1, 1, 1) * 10_000 + where).expand(8, 3, 40, 40)
    cuts = set()
    for seed in range(6):
        tiled = mix_pictures(x, {"kind": "mosaic", "alpha": 1.0}, seed)
        assert torch.equal(tiled % 10_000, where.expand(8, 3, 40, 40)) and torch.equal(tiled[:, 0], tiled[:, 2])
        source = (tiled[:, 0] // 10_000).long()
        for i in range(8):
            assert bool(source[i, 0, 0] == i)
            cy = int((source[i, :, 0] != i).nonzero()[0]) if bool((source[i, :, 0] != i).any()) else None
            cx = int((source[i, 0] != i).nonzero()[0]) if bool((source[i, 0] != i).any()) else None
            if cy is None or cx is None:  # a quarter drew the picture itself: read the cut from another row
                continue
            assert 10 <= cy <= 30 and 10 <= cx <= 30
            cuts.add((cy, cx))
            for q in (source[i, :cy, :cx], source[i, :cy, cx:], source[i, cy:, :cx], source[i, cy:, cx:]):
                assert q.amin() == q.amax()
    assert len(cuts) > 10  # the cut point varies from picture to picture
    bad_mixes = ({"kind": "blend"}, {"kind": "mosaic", "alpha": float("nan")}, {"kind": "cutmix", "alpha": 0}, {"kind": "mixup", "alpha": "1"}, {"alpha": 1, "p": 2})
    for bad in bad_mixes:
        with pytest.raises(IcmError, match="loss.mix"):
            mix_pictures(x, bad, 0)
    with pytest.raises(IcmError, match="loss.mix"):  # refused when the recipe loads, not at its first step
        DicmModule(make_dicm(busy=False), 4, loss={"mix": {"kind": "cutmix", "alpha": -1}})
    with pytest.raises(IcmError, match="stage 2 has no use"):
        DicmModule(make_dicm(busy=False), 2, loss={"mix": {"kind": "cutmix"}})
    # in training, the sender and the uncompressed reference read the same mixed batch
    torch.manual_seed(0)
    module = DicmModule(make_dicm(busy=False), 4, batch_size=2, max_steps=10, train_parts=["g_a"],
                        loss={"re_mse": 0.0, "stage_mse": [0.0, 0.0, 0.0], "kl": 1.0,
                              "mix": {"kind": "mixup", "alpha": 0.5}})
    seen = []
    head = module.model.head_features
    module.model.head_features = lambda z: seen.append(z.clone()) or head(z)
    batch = _photo_batch(2, 64)
    module.train()
    module.loss(batch)
    want = mix_pictures(batch, {"kind": "mixup", "alpha": 0.5}, 2_000_003)
    assert len(seen) == 1  # the reference tail reads the sender's own head feature
    torch.testing.assert_close(seen[0][..., :64, :64], want)
    module.eval()
    seen.clear()
    module.loss(batch)  # evaluation does not mix
    torch.testing.assert_close(seen[0][..., :64, :64], batch)


def test_frozen_parts_stay_in_eval_mode():
    module = _module(4)
    module.train()
    assert not module.model.backbone.training and not module.model.re.training
    assert module.model.g_a.training and module.model.latent.training


def test_unknown_stage_and_part():
    from icm.errors import IcmError

    with pytest.raises(IcmError, match="stages 1–4"):
        _module(5)
    with pytest.raises(IcmError, match="unknown"):
        _module(3, train_parts=("re", "decoder"))


def test_contrastive_crop_schedule_refreshes_boxes():
    import lightning as L
    from torchvision.transforms.v2.functional import resize

    from icm.train.moco import heatmap_boxes

    from icm.train.dicm import build

    cfg = {"stage": 3, "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL["dicm-lite0"]},
           "train": ["re"], "data": {"kind": "photos", "crop": 64, "batch_size": 8, "box_size": 160,
                                      "train_photos": SKIMAGE_TRAIN_PHOTOS, "val_photos": PHOTOS[:1]},
           "moco": {"queue": 64, "dim": 16, "hidden": 32, "warmup_epochs": 1, "refresh_every": 1},
           "optim": {}, "trainer": {"max_steps": 1}}
    torch.manual_seed(0)
    model, module, train_loader, _ = build(cfg)
    views = module.views
    assert views.warmup and bool((views.boxes == torch.tensor([0.0, 0.0, 1.0, 1.0])).all())
    refreshes, update = [], views.update_boxes

    def recording(feature_fn, **kw):  # the boxes from the network as it is when the epoch starts
        update(feature_fn, **kw)
        refreshes.append((module.current_epoch, views.warmup, views.boxes.clone()))
        enc = module.moco.encoder_q
        with torch.no_grad():
            batch = torch.stack([resize(img, [160, 160], antialias=True) for img in views.base.images]).clamp(0, 1)
            want = heatmap_boxes(enc.last_stage(batch), (160, 160))
        assert torch.allclose(views.boxes, want, atol=1e-6)

    views.update_boxes = recording
    steps = len(train_loader) + 1  # one epoch of plain crops, then the first step of epoch 1
    trainer = L.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, train_loader)
    assert not views.warmup
    assert [(e, w) for e, w, _ in refreshes] == [(1, False)]  # once, after the warm-up epoch, before its crops
    assert torch.equal(views.boxes, refreshes[0][2])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_parses_and_builds(path, imagefolder_root):
    from icm.train.dicm import DicmModule, build
    from icm.train.run import load_config

    cfg = load_config(path)
    assert cfg["model"]["name"].startswith("dicm") and cfg["stage"] in (1, 2, 3, 4)
    text = path.read_text()
    assert "SEEDS.md, dicm stage" in text
    cfg["model"]["init"] = None
    cfg["model"]["kwargs"] = {**cfg["model"].get("kwargs", {}), **SMALL[cfg["model"]["name"]]}
    if cfg["model"].get("fit_prior"):
        cfg["model"]["fit_prior"] = {"images": 8, "steps": 5}
    if cfg["model"].get("fit_transform"):  # the recipe's step, on fewer crops
        cfg["model"]["fit_transform"] = {**cfg["model"]["fit_transform"], "images": 16}
    if cfg["data"]["kind"] == "photos":  # the offline photo splits need Debian data: fixture photos instead
        cfg["data"].update(train_photos=PHOTOS, val_photos=PHOTOS[:1])
    if cfg["data"]["kind"] == "imagefolder":  # the paper recipes: ImageNet layout, here a tiny fixture
        assert cfg["trainer"]["strategy"] == "ddp" and cfg["model"]["name"] == "dicm"
        cfg["data"].update(root=str(imagefolder_root), workers=0, batch_size=2, crop=32)
    model, module, train_loader, val_loader = build(cfg)
    assert isinstance(module, DicmModule) and module.stage == cfg["stage"]
    batch = next(iter(train_loader))
    assert (batch[0] if isinstance(batch, (list, tuple)) else batch).shape[-1] == cfg["data"]["crop"]
    if cfg["stage"] == 4:
        assert module.weights["lmbda"] == cfg["loss"]["lmbda"]
    if cfg["stage"] == 2:  # a fresh RE module: the cut feature's statistics are measured first
        assert not torch.equal(model.re.std, torch.ones_like(model.re.std))
        f = model.head_features(batch[:4] if not isinstance(batch, (list, tuple)) else batch[0][:4])
        spread = model.re.standardise(f).std(dim=(0, 2, 3))
        assert 0.5 < float(spread.mean()) < 2.0  # unit spread per channel, up to crop-to-crop variation


# -- files and the command line ------------------------------------------------------------------


@pytest.fixture
def dicm_get_model(monkeypatch):
    real = codec.get_model
    model = make_dicm()
    model.model_name, model.quality = "dicm-lite0", 4

    def fake(name, quality):
        return model if (name, quality) == ("dicm-lite0", 4) else real(name, quality)

    monkeypatch.setattr(codec, "get_model", fake)
    return model


def test_cli_analyze_gives_imagenet_names_and_decompress_refuses(run_cli, dicm_get_model, tmp_path):
    model = dicm_get_model
    path = tmp_path / "a.icm"
    path.write_bytes(codec.encode(model, gradient_image(45, 60))[0])
    r = run_cli("analyze", path, "--json", "--task", "classify")
    assert r.code == 0, r.err
    row = json.loads(r.out)
    assert (row["model"], row["task"]) == ("dicm-lite0", "classify")
    f = codec.read(path)
    logits = model.analyze(Compressed([f.sections], (45, 60)))
    assert [t["index"] for t in row["top5"]] == logits[0].topk(5).indices.tolist()
    assert [t["label"] for t in row["top5"]] == [model.class_names[t["index"]] for t in row["top5"]]
    assert model.class_names[0].startswith("tench")
    r = run_cli("decompress", path, "-o", tmp_path / "x.png")
    assert r.code == 2 and "carries no pixel decoder" in r.err and not (tmp_path / "x.png").exists()


def test_lite0_s8_shipped_files_classify_from_the_cli_and_refuse_detection(run_cli, tmp_path):
    from icm.data import to_tensor
    from icm.images import read_rgb

    sample = Path(__file__).resolve().parents[1] / "src" / "icm" / "samples" / "coffee.png"
    path = tmp_path / "coffee.icm"
    r = run_cli("compress", sample, "-m", "dicm-lite0-s8", "-q", "1", "-o", path)
    assert r.code == 0, r.err
    f = codec.read(path)
    assert (f.header.model_id, f.header.quality) == (10, 1)
    r = run_cli("analyze", path, "--json", "--task", "classify")
    assert r.code == 0, r.err
    row = json.loads(r.out)
    model = create_model("dicm-lite0-s8", quality=1, pretrained=True).eval()
    x = to_tensor(read_rgb(sample))[None]
    with torch.no_grad():
        expected = model.analyze(model.compress(x)).topk(5).indices[0].tolist()
    assert (row["model"], row["quality"]) == ("dicm-lite0-s8", 1)
    assert [t["index"] for t in row["top5"]] == expected
    assert row["bpp"] == pytest.approx(8 * path.stat().st_size / (x.shape[-2] * x.shape[-1]), abs=1e-6)
    r = run_cli("analyze", path, "--task", "detect")
    assert r.code == 2 and "'dicm-lite0-s8' does not run task 'detect'" in r.err and "Traceback" not in r.err


def test_photo_crops_at_evaluation_scale_come_from_resized_copies():
    from icm.data import PhotoCrops, load_photo

    sources = PHOTOS[:2]
    native = [load_photo(s).shape[:2] for s in sources]
    crops = PhotoCrops(sources, size=64, seed=0, short_sides=(96, 128))
    sides = sorted(min(im.shape[:2]) for im in crops.images)
    assert sides == [96, 96, 128, 128]
    # aspect ratios are kept (to the pixel)
    for im, (h, w) in zip(crops.images, native * 2):
        assert abs(im.shape[1] / im.shape[0] - w / h) < 0.02
    x = next(iter(crops))
    assert x.shape == (3, 64, 64) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
