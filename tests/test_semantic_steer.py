"""The steered sender of ``dicm`` (``DICM(semantic=W)``, :class:`icm.models.dicm.SemanticSteer`):
it starts as the plain encoder, loads a plain codec's weights, learns alone in stage 4, and
its files decode with the plain receiver."""

from __future__ import annotations

import pytest
import torch
from test_dicm import _photo_batch, make_dicm

from icm.errors import IcmError
from icm.models import Compressed

torch.set_num_threads(1)


def steered_pair(seed: int = 0):
    plain = make_dicm(seed=seed)
    steered = make_dicm(seed=seed, semantic=16)
    steered.load_shipped({k: v for k, v in plain.state_dict().items() if not k.startswith("backbone.")})
    steered.backbone.load_state_dict(plain.backbone.state_dict())
    return plain, steered


def test_steering_starts_as_the_plain_encoder_and_then_changes_y():
    plain, steered = steered_pair()
    x = _photo_batch(2, 64)
    with torch.no_grad():
        assert torch.equal(plain.analysis(plain.pad(x)), steered.analysis(steered.pad(x)))
        steered.semantic.net[-1].bias.normal_(0, 0.5)
        y0, y1 = plain.analysis(plain.pad(x)), steered.analysis(steered.pad(x))
    assert y0.shape == y1.shape and not torch.allclose(y0, y1)
    # forward (training and tests) and analysis give the same y
    with torch.no_grad():
        assert torch.equal(steered(x)["y_hat"], steered.latent(y1)["y_hat"])


def test_a_plain_receiver_decodes_a_steered_senders_files():
    plain, steered = steered_pair(seed=1)
    with torch.no_grad():
        steered.semantic.net[-1].weight.normal_(0, 0.05)
    x = _photo_batch(1, 64, seed=3)
    coded = steered.compress(x)
    again = Compressed(coded.strings, coded.image_size)
    with torch.no_grad():
        a = steered.decompress(coded, pixels=False)["y_hat"]
        b = plain.decompress(again, pixels=False)["y_hat"]
        assert torch.equal(a, b)
        assert torch.equal(steered.analyze(coded, "classify"), plain.analyze(again, "classify"))


def test_weights_with_part_of_the_steering_are_refused():
    _, steered = steered_pair()
    state = {k: v for k, v in steered.state_dict().items() if not k.startswith("backbone.")}
    state.pop("semantic.net.0.weight")
    with pytest.raises(RuntimeError, match="missing"):
        make_dicm(semantic=16).load_shipped(state)


def test_stage4_can_train_the_steering_alone_or_with_the_encoder():
    from icm.train.dicm import DicmModule

    loss = {"re_mse": 0.0, "stage_mse": [0.0, 0.0, 0.0], "kl": 1.0}
    _, steered = steered_pair()
    DicmModule(steered, 4, batch_size=2, max_steps=2, train_parts=["semantic"], loss=loss)
    assert {n.split(".")[0] for n, p in steered.named_parameters() if p.requires_grad} == {"semantic"}
    _, steered = steered_pair()
    module = DicmModule(steered, 4, batch_size=2, max_steps=2, train_parts=["g_a", "semantic"], loss=loss)
    assert {n.split(".")[0] for n, p in steered.named_parameters() if p.requires_grad} == {"g_a", "semantic"}
    module.train()
    terms = module.loss(_photo_batch(2, 64))
    terms["loss"].backward()
    assert float(steered.semantic.net[-1].weight.grad.abs().sum()) > 0  # the zero start still learns
    with pytest.raises(IcmError, match="semantic steering"):
        DicmModule(make_dicm(), 4, train_parts=["semantic"], loss=loss)
    with pytest.raises(IcmError, match=r"\[semantic\]"):
        DicmModule(make_dicm(), 4, train_parts=["g_s"], loss=loss)


def test_a_steered_sender_is_not_exported_half(tmp_path):
    pytest.importorskip("onnx")
    from icm.export_onnx import export

    _, steered = steered_pair()
    with pytest.raises(IcmError, match="steered sender"):
        export("dicm-lite0", 4, tmp_path, model=steered)
    assert not list(tmp_path.iterdir())
