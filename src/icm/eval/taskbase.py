"""The base of every ``icm eval`` task (:mod:`icm.eval.tasks`, :mod:`icm.eval.detect`)."""

from __future__ import annotations

import numpy as np

from ..errors import IcmError


class Task:
    """Base class.  Subclasses are small and picklable (they travel to worker processes).

    Attributes:
        name: the ``--task`` name.
        metrics: per-image numbers averaged into rate points, all higher-is-better.
        primary: the metric BD-rate and BD-metric are computed on.
        network: whether a network runs per image (its time is reported as ``task_s``).
        latent_name: the model task a codec must run from its latent for :meth:`on_latent`.
    """

    name = ""
    latent_name = ""
    """The model task whose output :meth:`on_latent` reads (default: ``name``)."""
    metrics: tuple[str, ...] = ()
    primary = ""
    network = False

    def setup(self, dataset) -> None:
        """Adapt to a dataset (label space) before the sweep."""

    def config(self) -> dict:
        """What else defines a result (part of every cache key and of the JSON)."""
        return {}

    def reference(self, image: np.ndarray) -> dict | None:
        """Task output on the uncompressed image (computed once per image), JSON-able."""
        return None

    def on_pixels(self, image: np.ndarray, decoded: np.ndarray, label: int | None, ref: dict | None) -> dict:
        """Per-image numbers for decoded pixels (``uint8 (H, W, 3)`` like ``image``)."""
        raise NotImplementedError

    def on_latent(self, model, y_hat, image: np.ndarray, label: int | None, ref: dict | None) -> dict:
        """Per-image numbers for a task that runs on our decoded latent."""
        raise IcmError(f"task {self.name!r} does not run on a decoded latent")

    def aggregate(self, rows: list[dict]) -> dict:
        """The metrics of one rate point from its per-image rows (default: means over images)."""
        out = {}
        for k in self.metrics:
            vals = [r[k] for r in rows if r.get(k) is not None]
            out[k] = float(np.mean(vals)) if vals else None
        return out

    def uncompressed(self, refs: list[dict]) -> dict:
        """The task's network on the original images, from :meth:`reference` outputs
        (``refs``: one ``{"image", "ref", "label"}`` per image); ``{}`` if it has no such figure."""
        return {}
