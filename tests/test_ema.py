"""``trainer: {ema: D}``: the weights being trained are the run's without it, validation and
every checkpoint hold their moving average (computed here by hand from the trained weights
of every step), and a resumed run is still the uninterrupted one."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import PHOTOS
from icm.errors import IcmError
from icm.train.config import validate
from icm.train.run import run
from test_resume import SMALL_LITE0, assert_resume_is_exact

DECAY = 0.6


def recipe(out, ema=None, steps=4) -> dict:
    t = {"seed": 3, "max_steps": steps, "val_every": 2, "ckpt_every": 2, "keep_checkpoints": True,
         "out_dir": str(out)}
    if ema is not None:
        t["ema"] = ema
    return {"stage": 4, "model": {"name": "dicm-lite0", "quality": 4, "kwargs": SMALL_LITE0},
            "data": {"kind": "photos", "crop": 64, "batch_size": 2, "train_photos": list(PHOTOS),
                     "val_photos": [PHOTOS[0]]},
            "optim": {"name": "adamw", "lr": 3e-3, "min_lr": 1e-6, "weight_decay": 0.0},
            "trainer": t}


class Record(Callback):
    """The trained parameters at the start and after every step, and one parameter as
    validation sees it."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []
        self.in_validation: list[torch.Tensor] = []

    @staticmethod
    def _trained(pl_module):
        return {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer, pl_module):
        self.steps.append(self._trained(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append(self._trained(pl_module))

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.global_step > 0:
            self.in_validation.append(self._trained(pl_module))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema")
    plain, averaged = Record(), Record()
    run(recipe(root / "plain"), callbacks=[plain], enable_progress_bar=False, logger=False)
    run(recipe(root / "ema", DECAY), callbacks=[averaged], enable_progress_bar=False, logger=False)
    return root, plain, averaged


def _by_hand(steps: list[dict[str, torch.Tensor]], upto: int) -> dict[str, torch.Tensor]:
    avg = {n: v.clone() for n, v in steps[0].items()}
    for s in steps[1:upto + 1]:
        for n in avg:
            avg[n] = DECAY * avg[n] + (1 - DECAY) * s[n]
    return avg


def test_the_average_leaves_training_alone_and_checkpoints_hold_it(runs):
    root, plain, averaged = runs
    assert len(plain.steps) == len(averaged.steps) == 5
    for a, b in zip(plain.steps, averaged.steps):  # the same trained weights at every step
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    moved = [n for n in plain.steps[0] if not torch.equal(plain.steps[0][n], plain.steps[-1][n])]
    assert moved  # training did change the weights, so an average differs from them
    for step in (2, 4):
        ckpt = _load(root / "ema" / "checkpoints" / f"step-step={step}.ckpt")
        want = _by_hand(plain.steps, step)
        for n, v in want.items():
            torch.testing.assert_close(ckpt["state_dict"][n], v, rtol=1e-5, atol=1e-6)
            assert torch.equal(ckpt["ema"]["trained"][n], plain.steps[step][n])
        assert any(not torch.equal(ckpt["state_dict"][n], plain.steps[step][n]) for n in moved)
        # the plain run's checkpoint holds the trained weights, with no average beside them
        other = _load(root / "plain" / "checkpoints" / f"step-step={step}.ckpt")
        assert "ema" not in other and all(torch.equal(other["state_dict"][n], plain.steps[step][n]) for n in want)


def test_validation_runs_on_the_average(runs):
    root, plain, averaged = runs
    assert len(averaged.in_validation) == 2 and len(plain.in_validation) == 2
    for seen, step in zip(averaged.in_validation, (2, 4)):
        want = _by_hand(plain.steps, step)
        for n in want:
            torch.testing.assert_close(seen[n], want[n], rtol=1e-5, atol=1e-6)
    for seen, step in zip(plain.in_validation, (2, 4)):
        assert all(torch.equal(seen[n], plain.steps[step][n]) for n in seen)


def test_a_run_with_an_average_resumes_exactly(tmp_path):
    cfg = recipe(tmp_path, DECAY, steps=5)
    cfg["trainer"].pop("keep_checkpoints")
    assert_resume_is_exact(cfg, tmp_path, n=5, k=2)


def test_resuming_a_run_without_an_average_is_refused(tmp_path):
    run(recipe(tmp_path, steps=2), enable_progress_bar=False, logger=False)
    cfg = recipe(tmp_path, DECAY, steps=3)
    cfg["trainer"]["resume"] = "last"
    with pytest.raises(IcmError, match="no averaged weights"):
        run(cfg, enable_progress_bar=False, logger=False)


def test_resuming_an_averaged_run_without_its_average_is_refused(tmp_path):
    run(recipe(tmp_path, DECAY, steps=2), enable_progress_bar=False, logger=False)
    cfg = recipe(tmp_path, steps=3)
    cfg["trainer"]["resume"] = "last"
    with pytest.raises(IcmError, match=r"holds averaged weights .*trainer.ema set \(it was 0.6\)"):
        run(cfg, enable_progress_bar=False, logger=False)


@pytest.mark.parametrize("bad", [1.0, -0.5, float("nan"), True, "0.99"])
def test_a_bad_decay_is_refused_with_the_recipe_named(bad):
    cfg = copy.deepcopy(recipe("runs/x", bad))
    with pytest.raises(IcmError, match=r"my\.yaml: trainer\.ema must be"):
        validate(cfg, "my.yaml")


def test_the_dense_loop_refuses_an_average():
    cfg = {"task": "dense", "trainer": {"ema": 0.99}}
    with pytest.raises(IcmError, match="dense loop keeps no weight average"):
        validate(cfg, "d.yaml")


def test_with_accumulated_gradients_the_average_moves_once_per_optimiser_step(tmp_path):
    rec = Record()
    cfg = recipe(tmp_path, DECAY, steps=2)
    run(cfg, callbacks=[rec], enable_progress_bar=False, logger=False, accumulate_grad_batches=2)
    assert len(rec.steps) == 5  # the start and four batches, two per optimiser step
    after = rec.steps[0::2]  # the weights at the start and after each optimiser step
    assert all(torch.equal(rec.steps[i][n], rec.steps[i - 1][n]) for i in (1, 3) for n in after[0])
    ckpt = _load(tmp_path / "checkpoints" / "step-step=2.ckpt")
    for n, v in _by_hand(after, 2).items():
        torch.testing.assert_close(ckpt["state_dict"][n], v, rtol=1e-5, atol=1e-6)
