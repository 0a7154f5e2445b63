"""The receiver-side refinement of ``dicm`` (``DICM(receiver=W)``,
:class:`icm.models.dicm.ReceiverRefine`): it starts as the plain receiver, loads a plain
codec's weights, trains with the codec in stage 4, and leaves the sender's files alone."""

from __future__ import annotations

import pytest
import torch
from test_dicm import _photo_batch, make_dicm

from icm.models import Compressed

torch.set_num_threads(1)
NAME = "dicm-lite0-s8"


def refined_pair(seed: int = 0):
    plain = make_dicm(NAME, quality=3, seed=seed)
    refined = make_dicm(NAME, quality=3, seed=seed, receiver=16)
    refined.load_shipped({k: v for k, v in plain.state_dict().items() if not k.startswith("backbone.")})
    refined.backbone.load_state_dict(plain.backbone.state_dict())
    return plain, refined


def test_the_refinement_starts_as_the_plain_receiver_and_leaves_the_file_alone():
    plain, refined = refined_pair()
    x = _photo_batch(1, 64, seed=3)
    coded, again = plain.compress(x), refined.compress(x)
    assert coded.strings == again.strings  # the sender has no part of it
    with torch.no_grad():
        before = plain.analyze(coded, "classify")
        assert torch.equal(refined.analyze(Compressed(coded.strings, coded.image_size), "classify"), before)
        refined.receiver.net[-1].weight.normal_(0, 0.05)
        after = refined.analyze(Compressed(coded.strings, coded.image_size), "classify")
    assert after.shape == before.shape and not torch.allclose(after, before)
    assert refined.compress(x).strings == coded.strings  # a trained receiver: still the same file


def test_weights_with_part_of_the_refinement_are_refused():
    _, refined = refined_pair()
    state = {k: v for k, v in refined.state_dict().items() if not k.startswith("backbone.")}
    state.pop("receiver.net.2.weight")
    with pytest.raises(RuntimeError, match="missing"):
        make_dicm(NAME, quality=3, receiver=16).load_shipped(state)


def test_stage4_trains_the_refinement_with_the_codec():
    from icm.train.dicm import DicmModule

    loss = {"re_mse": 0.0, "stage_mse": [0.0, 0.0, 0.0], "kl": 1.0}
    _, refined = refined_pair()
    module = DicmModule(refined, 4, batch_size=2, max_steps=2, loss=loss)
    trained = {n.split(".")[0] for n, p in refined.named_parameters() if p.requires_grad}
    assert trained == {"g_a", "g_s", "latent", "receiver"}
    module.train()
    assert refined.receiver.training and not refined.backbone.training
    module.loss(_photo_batch(2, 64))["loss"].backward()
    assert float(refined.receiver.net[-1].weight.grad.abs().sum()) > 0  # the zero start still learns
    _, refined = refined_pair()
    DicmModule(refined, 4, batch_size=2, max_steps=2, train_parts=["g_a"], loss=loss)
    assert {n.split(".")[0] for n, p in refined.named_parameters() if p.requires_grad} == {"g_a"}
