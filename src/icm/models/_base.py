"""What every image codec in ``icm`` shares: padding, the coded-result type,
and the ``compress`` / ``decompress`` verbs on top of a latent codec."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class Compressed:
    """The coded form of a batch of images (all of one size).

    Attributes:
        strings: ``strings[i]`` is the list of coded sections of image ``i``
            (for hyperprior-based models: ``[y_bytes, z_bytes]``).
        image_size: ``(H, W)`` of the input before padding.
    """

    strings: list[list[bytes]]
    image_size: tuple[int, int]

    def num_bytes(self, i: int = 0) -> int:
        return sum(len(s) for s in self.strings[i])


class ImageCodec(nn.Module):
    """Base class: an analysis transform, a latent codec and (optionally) a synthesis.

    Subclasses set ``stride`` (the padding multiple) and implement
    :meth:`analysis` and :meth:`synthesis`; ``self.latent`` is a latent codec
    with ``forward`` / ``compress`` / ``decompress``.

    Inputs are batches ``(B, in_channels, H, W)`` (RGB unless a model says
    otherwise) with values in ``[0, 1]`` and any ``H, W >= 1``: they are padded
    (edge replication) to a multiple of ``stride`` and outputs are cropped back.

    A model that runs analysis tasks on the decoded latent lists them in
    ``tasks`` and implements :meth:`analyze_latent`; :meth:`analyze` then
    decodes a bitstream straight into task outputs, without pixels.
    """

    stride: int = 64
    in_channels: int = 3
    num_sections: int = 2
    has_pixel_decoder: bool = True
    tasks: tuple[str, ...] = ()
    refinable: bool = False  # has refine_objective (icm.refine): encoder-side latent refinement
    model_name: str = ""
    quality: int = 0

    # -- to implement --------------------------------------------------------
    def refine_objective(self, x: Tensor):
        """``(rate weight, distortion)`` descended by encoder-side refinement
        (:func:`icm.refine.refine_latents`): the cost of a soft-rounded ``ŷ`` is
        ``rate weight · bpp + distortion(ŷ)`` per image.  Here: ``bpp + λ·255²·MSE``
        of the reconstruction of ``x`` (pixel-fidelity models with ``refinable``)."""
        h, w = x.shape[-2:]
        weight = self.lmbda * 255.0**2

        def distortion(y_hat: Tensor) -> Tensor:
            x_hat = self.synthesis(y_hat)[..., :h, :w]
            return weight * ((x_hat - x) ** 2).mean(dim=(1, 2, 3))

        return 1.0, distortion

    def analysis(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def synthesis(self, y_hat: Tensor) -> Tensor:
        raise NotImplementedError

    def analyze_latent(self, y_hat: Tensor, task: str, image_size: tuple[int, int] | None = None) -> Tensor:
        """Output of ``task`` (one of ``tasks``) on a decoded latent of an image of ``image_size``."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------
    def load_shipped(self, state: dict) -> None:
        """Load shipped weights (every key; families with parts that come
        from elsewhere, such as an ImageNet backbone, override this)."""
        self.load_state_dict(state)

    def pad(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def latent_shape(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """Spatial shape of ``z`` for an image of ``image_size``."""
        h, w = image_size
        return (-(-h // self.stride), -(-w // self.stride))

    def _check_input(self, x: Tensor) -> None:
        c = self.in_channels
        if x.dim() != 4 or x.shape[1] != c:
            kind = {3: "an RGB", 1: "a greyscale"}.get(c, f"a {c}-channel")
            raise ValueError(f"expected {kind} batch (B, {c}, H, W), got shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> dict:
        """Returns ``{"x_hat", "y_hat", "likelihoods": {"y", "z"}}``; ``x_hat`` is
        cropped to the input size (not clamped in training)."""
        self._check_input(x)
        h, w = x.shape[-2:]
        out = self.latent(self.analysis(self.pad(x)))
        x_hat = self.synthesis(out["y_hat"])[..., :h, :w]
        if not self.training:
            x_hat = x_hat.clamp(0, 1)
        return {"x_hat": x_hat, "y_hat": out["y_hat"], "likelihoods": out["likelihoods"]}

    @torch.no_grad()
    def compress(self, x: Tensor, refine: int = 0, callback=None, objective=None) -> Compressed:
        """Code a batch of images ``(B, in_channels, H, W)`` in ``[0, 1]``.

        Args:
            refine: gradient steps of encoder-side latent refinement
                (:func:`icm.refine.refine_latents`; models with ``refinable``
                only); the decoder does not change.
            callback: called with the step number after each refinement step.
            objective: the refinement's objective if not :meth:`refine_objective`.
        """
        self._check_input(x)
        if refine:
            from ..refine import refine_latents

            y, z = refine_latents(self, x, steps=refine, callback=callback, objective=objective)
            coded = self.latent.compress(y, z)
        else:
            coded = self.latent.compress(self.analysis(self.pad(x)))
        return Compressed(coded.strings, tuple(x.shape[-2:]))

    @torch.no_grad()
    def decompress(self, compressed: Compressed, pixels: bool = True) -> dict:
        """Decode; returns ``{"y_hat"}`` and, with ``pixels``, ``"x_hat"`` in ``[0, 1]``.

        Raises:
            ValueError: ``pixels=True`` for a model without a pixel decoder.
        """
        device = next(self.parameters()).device
        y_hat = self.latent.decompress(compressed.strings, self.latent_shape(compressed.image_size), device=device)
        out = {"y_hat": y_hat}
        if pixels:
            if not self.has_pixel_decoder:
                raise ValueError(f"model {self.model_name!r} has no pixel decoder")
            h, w = compressed.image_size
            out["x_hat"] = self.synthesis(y_hat)[..., :h, :w].clamp(0, 1)
        return out

    @torch.no_grad()
    def analyze(self, compressed: Compressed, task: str | None = None) -> Tensor:
        """Decode the latent and run an analysis task on it; no pixels are made.

        Args:
            task: one of ``tasks`` (default: the first).

        Returns:
            The task's output for the batch (``classify``: logits ``(B, classes)``).

        Raises:
            ValueError: the model has no analysis tasks, or not this one.
        """
        if not self.tasks:
            raise ValueError(f"model {self.model_name!r} has no analysis tasks")
        task = task or self.tasks[0]
        if task not in self.tasks:
            raise ValueError(f"model {self.model_name!r} does not run task {task!r} (its tasks: {', '.join(self.tasks)})")
        device = next(self.parameters()).device
        y_hat = self.latent.decompress(compressed.strings, self.latent_shape(compressed.image_size), device=device)
        return self.analyze_latent(y_hat, task, compressed.image_size)
