"""Training data and randomness that are functions of the step, not of the history.

Two promises of every recipe rest on this module:

* **Ranks see disjoint data.**  :class:`EpochOrder` permutes the training set
  from ``(seed, epoch)`` and deals it out like cards: global position ``g`` of
  an epoch goes to rank ``g mod world``.  Every rank reads ``n // world`` items
  (the tail of the permutation is dropped, so that every rank has the same
  number of batches and batch shapes; MoCo's gathers need them equal).
* **A resumed run is the uninterrupted run.**  Every item is read under its own
  seed (``seed, epoch, global position``: :class:`SeededItems`), every batch is
  collated under its own seed (:class:`SeededCollate`, for mixup/cutmix), the
  loader's worker seeds come from its own generator, and the step's own
  randomness (quantisation noise, dropout, MoCo's shuffle, the detector's
  anchor sampling) is re-seeded from ``(seed, rank, global step)`` before each
  step (:class:`ExactResume`).  Nothing depends on what ran before in the same
  process, so a run restarted from a checkpoint at step k draws the very
  numbers the uninterrupted run drew.  :class:`ExactResume` also stores the
  position inside the epoch in the checkpoint, and :class:`EpochOrder` skips
  what was already trained on when the run resumes mid-epoch.

The item at global position ``g`` of epoch ``e`` is the same item with the same
augmentation whatever the number of ranks and workers: two ranks with batch
``B`` read, between them, exactly the ``2B`` items one process reads with batch
``2B`` (rank 0 the even positions, rank 1 the odd ones).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

__all__ = ["EpochOrder", "ExactResume", "SeededCollate", "SeededItems", "mix_seed", "rank_and_world",
           "seeded", "train_loader"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (NumPy's ``SeedSequence``: nearby inputs give unrelated seeds)."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


@contextlib.contextmanager
def seeded(seed: int):
    """Run the block with torch's, NumPy's and Python's global generators seeded from ``seed``,
    and give them back their states after (the caller's stream does not move)."""
    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (``(0, 1)`` outside ``torch.distributed``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochOrder(DistributedSampler):
    """The training order of a map-style dataset: yields ``(index, item seed)`` keys.

    Epoch ``e``'s order is ``randperm(n)`` from ``(seed, e)`` (or ``0…n−1`` without
    ``shuffle``); this rank takes positions ``rank, rank + world, …``.  The rank
    and world size are read when an epoch starts (the process group does not
    exist yet when a recipe builds its loaders).

    It is a ``DistributedSampler`` by type only, so that Lightning does not put
    its own sampler in its place; it shares none of its code.
    """

    def __init__(self, size: int, seed: int = 0, shuffle: bool = True) -> None:
        if size < 1:
            raise ValueError("EpochOrder: an empty dataset")
        self.size, self.seed, self.shuffle = int(size), int(seed), bool(shuffle)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, items of this rank already read)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume(self, epoch: int, items: int) -> None:
        """Start the next pass at epoch ``epoch``, skipping the first ``items`` of this rank's share."""
        self.epoch = int(epoch)
        self._resume = (int(epoch), int(items))

    def order(self, epoch: int) -> torch.Tensor:
        """The whole epoch's permutation (every rank computes the same one)."""
        if not self.shuffle:
            return torch.arange(self.size)
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(mix_seed(self.seed, epoch)))

    def __len__(self) -> int:
        return self.size // rank_and_world()[1]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = rank_and_world()
        epoch, per_rank = self.epoch, self.size // world
        skip = 0
        if self._resume is not None:
            if self._resume[0] == epoch:
                skip = self._resume[1]
            self._resume = None
        order = self.order(epoch)
        for pos in range(skip, per_rank):
            g = pos * world + rank
            yield int(order[g]), mix_seed(self.seed, epoch, g)


class SeededItems(Dataset):
    """A map-style dataset read with :class:`EpochOrder`'s keys: item ``i`` under seed ``s``;
    returns ``(item, s)`` for :class:`SeededCollate`."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, s = key
        with seeded(s):
            return self.base[i], s


class SeededCollate:
    """Collate ``(item, seed)`` pairs with ``inner`` (default: ``default_collate``) under a
    seed of the batch, so that batch-level augmentation (mixup, cutmix) is the batch's own."""

    def __init__(self, inner: Callable | None = None) -> None:
        self.inner = inner or default_collate

    def __call__(self, batch):
        items, seeds = zip(*batch)
        with seeded(mix_seed(*seeds[:1], len(seeds), 1)):
            return self.inner(list(items))


def train_loader(dataset: Dataset, batch_size: int, seed: int = 0, *, shuffle: bool = True,
                 collate_fn: Callable | None = None, num_workers: int = 0, persistent_workers: bool | None = None,
                 drop_last: bool | None = None) -> DataLoader:
    """The training loader of a map-style dataset: :class:`EpochOrder`, items and batches
    under their own seeds.  ``drop_last`` defaults to dropping a short last batch when the
    dataset holds at least one batch per rank."""
    order = EpochOrder(len(dataset), seed, shuffle)
    if persistent_workers is None:
        persistent_workers = num_workers > 0
    return DataLoader(SeededItems(dataset), batch_size=batch_size, sampler=order,
                      drop_last=len(dataset) >= batch_size if drop_last is None else drop_last,
                      collate_fn=SeededCollate(collate_fn), num_workers=num_workers,
                      persistent_workers=persistent_workers and num_workers > 0,
                      generator=torch.Generator().manual_seed(mix_seed(seed, 2)))


class ExactResume(Callback):
    """Re-seed every step from ``(seed, rank, global step)`` and keep the position in the epoch
    in checkpoints, so that resuming continues the very run (see the module docstring).

    Args:
        seed: the recipe's seed.
        loader: the training loader; where its sampler is an :class:`EpochOrder` (or its
            dataset a :class:`~icm.data.PhotoCrops` stream), a resumed run skips what
            this epoch already trained on.
    """

    def __init__(self, seed: int = 0, loader: DataLoader | None = None) -> None:
        self.seed = int(seed)
        self.loader = loader
        self.epoch, self.batches = 0, 0

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        s = mix_seed(self.seed, trainer.global_rank, trainer.global_step, 3)
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.epoch, self.batches = trainer.current_epoch, batch_idx + 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batches = int(state["epoch"]), int(state["batches"])

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # called after the weights are back and before the loader's first batch is fetched
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None or self.loader is None:
            return
        epoch, batches = int(state["epoch"]), int(state["batches"])
        size = self.loader.batch_size or 1
        sampler = getattr(self.loader, "sampler", None)
        if isinstance(sampler, EpochOrder):
            if batches >= len(self.loader):
                # saved on the epoch's last batch: the next epoch starts afresh, and Lightning
                # resumes into it without its epoch-start hooks, so the module's run here
                sampler.resume(epoch + 1, 0)
                start = getattr(pl_module, "start_epoch", None)
                if start is not None:
                    start(epoch + 1)
            else:
                sampler.resume(epoch, batches * size)
        elif hasattr(self.loader.dataset, "resume"):  # an endless stream (PhotoCrops): one epoch, forever
            self.loader.dataset.resume(batches)
