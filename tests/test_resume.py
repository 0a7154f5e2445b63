"""Resuming is exact: a run interrupted after step k and resumed from ``last`` reaches the
very weights, optimiser state and losses of the run that was never interrupted — inside
an epoch, on an epoch's last batch, after MoCo's guided crops were refreshed, with
mixup and two learning rates, on an endless photo stream and for the detection heads."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import PHOTOS, tiny_voc
from icm.train.run import run

SMALL_LITE0 = dict(re_dims=(16,), re_depths=(), dims=(24, 48, 48), M=48, N=16, hyper_dim=32, hyper_heads=2,
                   filter_size=(8, 8), pretrained_backbone=False)


class Interrupted(Exception):
    pass


class CrashAt(Callback):
    """Stop the run the way a lost machine does: at the start of the step after ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.k:
            raise Interrupted(f"stopped after step {self.k}")


class Losses(Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _train(cfg: dict, out, *callbacks) -> list[float]:
    cfg = copy.deepcopy(cfg)
    cfg["trainer"]["out_dir"] = str(out)
    losses = Losses()
    run(cfg, callbacks=[losses, *callbacks], enable_progress_bar=False, logger=False)
    return losses.losses


def assert_resume_is_exact(cfg: dict, tmp_path, n: int, k: int) -> None:
    cfg = copy.deepcopy(cfg)
    cfg["trainer"].update(max_steps=n, ckpt_every=1, resume="last")
    whole = _train(cfg, tmp_path / "whole")
    part = Losses()
    with pytest.raises(Interrupted):
        _train(cfg, tmp_path / "part", part, CrashAt(k))
    saved = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == k
    rest = _train(cfg, tmp_path / "part")
    assert len(whole) == n and len(rest) == n - k
    assert rest == whole[k:]  # the same floats, not close ones
    a = torch.load(tmp_path / "whole" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == n
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert a["lr_schedulers"] == b["lr_schedulers"]
    return whole


@pytest.fixture(scope="module")
def images16(tmp_path_factory):
    """ImageNet layout with 16 training images (4 batches of 4 per epoch)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("imagenet16")
    rng = np.random.default_rng(2)
    for c, cls in enumerate(("n01440764", "n01443537")):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(8):
            img = rng.integers(0, 120, size=(44, 52, 3)).astype(np.uint8)
            img[..., c] += 120
            Image.fromarray(img).save(root / "train" / cls / f"{i}.png")
    return root


def moco_recipe(root) -> dict:
    """dicm stage 1 (MoCo v2 + ContrastiveCrop): plain crops in epoch 0, boxes from the
    network at the start of every later epoch."""
    return {"stage": 1, "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL_LITE0},
            "moco": {"queue": 16, "dim": 8, "hidden": 16, "warmup_epochs": 1, "refresh_every": 1},
            "data": {"kind": "imagefolder", "root": str(root), "crop": 32, "batch_size": 4, "box_size": 96},
            "optim": {"name": "sgd", "lr": 0.03, "lr_batch": 256, "momentum": 0.9, "weight_decay": 1e-4},
            "trainer": {"seed": 0, "val_every": 1000}}


@pytest.mark.parametrize("k", [pytest.param(3, marks=pytest.mark.slow), 4, 5],
                         ids=["mid-epoch", "epoch-end", "after-refresh"])  # 5 is inside an epoch too
def test_moco_run_resumes_exactly(images16, tmp_path, k):
    whole = assert_resume_is_exact(moco_recipe(images16), tmp_path, n=7, k=k)
    assert len(set(whole)) == len(whole)  # the steps did differ: the comparison is not of constants


@pytest.mark.slow  # CI runs it (.ci/run, part 2b)
def test_bai2022_step2_with_mixup_and_two_learning_rates_resumes_exactly(images16, tmp_path):
    cfg = {"step": 2, "model": {"name": "bai2022-tiny", "quality": 1, "kwargs": {"num_classes": 2}},
           "loss": {"alpha": 0.1, "beta": 0.001, "label_smoothing": 0.1},
           "data": {"kind": "imagefolder", "root": str(images16), "crop": 32, "batch_size": 4, "randaugment": True,
                    "random_erasing": 0.25, "mixup": 0.8, "cutmix": 1.0},
           "optim": {"lr": 1e-3, "latent_lr": 3e-3, "min_lr": 1e-5, "clip": 1.0},
           "trainer": {"seed": 1, "val_every": 1000}}
    assert_resume_is_exact(cfg, tmp_path, n=6, k=3)


@pytest.mark.slow  # CI runs it (.ci/run, part 2b)
def test_dicm_stage4_on_the_endless_photo_stream_resumes_exactly(tmp_path):
    cfg = {"stage": 4, "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL_LITE0},
           "data": {"kind": "photos", "crop": 64, "batch_size": 2, "train_photos": list(PHOTOS),
                    "val_photos": [PHOTOS[0]]},
           "optim": {"name": "adamw", "lr": 1e-3, "min_lr": 1e-6, "weight_decay": 0.0},
           "trainer": {"seed": 0, "val_every": 1000}}
    assert_resume_is_exact(cfg, tmp_path, n=5, k=2)


@pytest.mark.slow  # CI runs it (.ci/run, part 2b)
def test_detection_heads_resume_exactly(tmp_path):
    voc = tiny_voc(tmp_path / "voc", 8)
    cfg = {"task": "detect", "path": "latent",
           "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL_LITE0},
           "heads": {"fpn_channels": 16, "representation_size": 32, "anchor_sizes": [[16], [32], [48], [64]]},
           "data": {"kind": "voc", "root": [str(voc)], "image_set": "trainval", "batch_size": 2, "flip": True},
           "optim": {"name": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 1e-4, "warmup_steps": 2},
           "trainer": {"seed": 0, "val_every": 1000}}
    assert_resume_is_exact(cfg, tmp_path, n=6, k=3)


def test_ranks_read_disjoint_shares_and_resume_skips_what_was_read():
    """EpochOrder with its process group faked: two ranks split each epoch between them,
    the same item gets the same seed whatever the number of ranks, and a resumed pass starts
    where the interrupted one stopped."""
    from unittest import mock

    from icm.train import resume

    order = resume.EpochOrder(10, seed=3)
    with mock.patch.object(resume, "rank_and_world", return_value=(0, 1)):
        single = list(order)
    shares = []
    for rank in (0, 1):
        with mock.patch.object(resume, "rank_and_world", return_value=(rank, 2)):
            shares.append(list(order))
            assert len(order) == 5
    assert not {i for i, _ in shares[0]} & {i for i, _ in shares[1]}
    assert sorted(shares[0] + shares[1]) == sorted(single)  # same items, same seeds
    assert [x for pair in zip(*shares) for x in pair] == single  # rank r takes positions r, r + 2, …
    order.set_epoch(1)
    with mock.patch.object(resume, "rank_and_world", return_value=(0, 1)):
        epoch1 = list(order)
        assert [i for i, _ in epoch1] != [i for i, _ in single]
        order.resume(1, 4)
        assert list(order) == epoch1[4:]
        assert list(order) == epoch1  # the skip applies to one pass only
