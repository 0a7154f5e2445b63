"""Rate–distortion training of a codec with pixel output (the ``hyperprior`` recipe)."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from ..losses import rate_distortion


class RateDistortionModule(L.LightningModule):
    """Thin Lightning wrapper: the codec is built outside and handed in.

    Args:
        model: an :class:`icm.models.ImageCodec`.
        lmbda: λ of ``bpp + λ·255²·MSE``.
        lr: Adam learning rate (cosine-decayed to ``lr * final_lr_ratio``).
        max_steps: length of the schedule.
        clip: gradient-norm clip.
    """

    def __init__(self, model: nn.Module, lmbda: float, lr: float = 1e-4, max_steps: int = 10000,
                 final_lr_ratio: float = 0.1, clip: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.lmbda = lmbda
        self.lr = lr
        self.max_steps_ = max_steps
        self.final_lr_ratio = final_lr_ratio
        self.clip = clip
        self.save_hyperparameters(ignore=["model"])

    def _step(self, x: torch.Tensor, stage: str) -> torch.Tensor:
        out = self.model(x)
        terms = rate_distortion(out, x, self.lmbda)
        self.log_dict({f"{stage}/{k}": v.detach() for k, v in terms.items()},
                      prog_bar=stage == "train", on_step=stage == "train", on_epoch=stage != "train",
                      batch_size=x.shape[0])
        return terms["loss"]

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.max_steps_, eta_min=self.lr * self.final_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        if self.clip > 0:  # clip: 0 means none (a norm of 0 would zero every gradient)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
