"""``trainer: {ema: D}``: an exponential moving average of the trained weights.

After every optimiser step each trained parameter's average moves towards it,
``avg ← D·avg + (1 − D)·p`` (it starts at the weights the run starts from).  The
average is what the run measures and keeps: validation runs on it, and every
checkpoint's ``state_dict`` holds it, so picking a step by validation loss,
``icm.train.export`` and ``icm.train.scaling`` all read averaged weights without
knowing.  The weights being trained travel in the same checkpoint
(``ema["trained"]``) and come back when the run resumes, so an interrupted run
resumed from ``last.ckpt`` is still the uninterrupted run.

``D`` sets how many recent steps the average spans (about ``1 / (1 − D)``):
0.998 spans some 500 steps.  Only parameters that train are averaged; frozen
ones and buffers are the model's own.  Every Lightning run carries the callback:
without ``ema`` it averages nothing and only refuses to resume a checkpoint whose
weights are averages (training would go on from the average, not the weights).
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

from ..errors import IcmError
from .config import check_ema


class WeightEma(Callback):
    """Keeps the moving average of the module's trained parameters (see the module's text);
    ``decay=None``: none."""

    def __init__(self, decay: float | None):
        self.decay = None if decay is None else check_ema(decay)
        self.average: dict[str, torch.Tensor] | None = None
        self._step = 0  # the optimiser step the average last moved at

    @staticmethod
    def _trained(module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer, pl_module) -> None:
        if self.decay is None:
            return
        trained = self._trained(pl_module)
        self._step = trainer.global_step
        if self.average is None:  # a fresh run (a resumed one has its average from the checkpoint)
            self.average = {n: p.detach().clone() for n, p in trained.items()}
        elif set(self.average) != set(trained):
            raise IcmError("trainer.ema: the checkpoint's averaged parameters are not the ones this run trains")

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # once per optimiser step: with accumulate_grad_batches, batches that only add gradients leave it
        if self.average is None or trainer.global_step == self._step:
            return
        self._step = trainer.global_step
        for n, p in self._trained(pl_module).items():
            self.average[n].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def _swap(self, pl_module) -> None:
        for n, p in self._trained(pl_module).items():
            tmp = p.detach().clone()
            p.copy_(self.average[n])
            self.average[n] = tmp

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and self.average is not None:
            self._swap(pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and self.average is not None:
            self._swap(pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.average is None:
            return
        state = checkpoint["state_dict"]
        trained = {n: state[n] for n in self.average}
        for n, v in self.average.items():
            state[n] = v.detach().clone()
        checkpoint["ema"] = {"decay": self.decay, "trained": trained}

    @torch.no_grad()
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        saved = checkpoint.get("ema")
        if self.decay is None:
            if saved is not None:
                raise IcmError("the checkpoint to resume holds averaged weights (its run set trainer.ema): "
                               f"resume it with trainer.ema set (it was {saved['decay']})")
            return
        if saved is None:
            raise IcmError("trainer.ema is set but the checkpoint to resume has no averaged weights "
                           "(it was written by a run without trainer.ema)")
        # the model was loaded with the averages: put the trained weights back, keep the averages here
        params = dict(pl_module.named_parameters())
        self.average = {}
        for n, trained in saved["trained"].items():
            self.average[n] = params[n].detach().clone()
            params[n].copy_(trained)
