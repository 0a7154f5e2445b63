"""Run one recipe with ``icm.train.run.run`` and write what each rank saw and did.

``python tests/ddp_worker.py RECIPE.yaml REPORT_DIR``: the recipe is already adapted to
tiny fixtures; under ``strategy: ddp`` Lightning starts this same command again for rank
1.  Each rank writes ``REPORT_DIR/rank{r}.pt``:

* ``losses``: the training loss of every step;
* ``indices``: the dataset indices its training loader dealt it in epoch 0;
* ``batch``/``grads``/``step_seed``: its first step's batch, its gradients after
  backward (after DDP's all-reduce) and the seed that step ran under;
* ``weights``: SHA-256 of every final weight and buffer;
* ``writes``: every file it opened for writing, renamed, created or removed under the
  run's ``out_dir`` (Python's audit hooks see every ``open``, ``os.rename``, ``os.mkdir``…;
  ``torch.save`` and Lightning's writers go through them).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

from icm.train.config import load_config
from icm.train.resume import EpochOrder, mix_seed
from icm.train.run import run

torch.set_num_threads(1)


class Record(Callback):
    def __init__(self, seed: int) -> None:
        self.seed, self.losses, self.first = seed, [], {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0:
            self.first["batch"] = batch
            self.first["step_seed"] = mix_seed(self.seed, trainer.global_rank, 0, 3)

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step == 0:
            self.first["grads"] = {n: p.grad.detach().clone() for n, p in pl_module.named_parameters()
                                   if p.grad is not None}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def main(recipe: str, report: str) -> None:
    cfg = load_config(recipe)
    out = str(Path(cfg["trainer"]["out_dir"]).resolve())
    writes: list[str] = []

    def under_out(path) -> str | None:
        if isinstance(path, (str, bytes, os.PathLike)):
            path = os.path.abspath(os.fsdecode(path))
            return path if path.startswith(out) else None
        return None

    def audit(event, args):
        if event == "open":
            mode, flags = args[1], args[2]
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or (
                mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            path = under_out(args[0]) if writing else None
        elif event in ("os.rename", "os.replace", "os.link", "os.symlink"):
            path = under_out(args[1])
        elif event in ("os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            path = under_out(args[0])
        else:
            return
        if path is not None:
            writes.append(f"{event} {path}")

    sys.addaudithook(audit)
    record = Record(int(cfg["trainer"].get("seed", 0)))
    loaders = {}

    class Keep(Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            loaders["train"] = trainer.train_dataloader

        def on_train_end(self, trainer, pl_module) -> None:
            loaders["weights"] = {k: hashlib.sha256(v.detach().float().contiguous().numpy().tobytes()).hexdigest()
                                  for k, v in pl_module.state_dict().items()}

    run(cfg, callbacks=[record, Keep()], enable_progress_bar=False)
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    loader = loaders["train"]
    indices = None
    if isinstance(loader.sampler, EpochOrder):
        loader.sampler.set_epoch(0)
        indices = [i for i, _ in loader.sampler]
    torch.save({"losses": record.losses, "indices": indices, "writes": sorted(set(writes)),
                "weights": loaders["weights"],
                **record.first}, Path(report) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])


# -- MoCo on two gloo ranks, at the unit level (test_ddp.py spawns these) ----------------------
B = 4  # images per rank


def small_moco(bn: bool):
    """A MoCo with a small convolutional encoder, with or without BatchNorm, seeded."""
    from torch import nn

    from icm.train.moco import MoCo

    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1)] + ([nn.BatchNorm2d(8)] if bn else []) + [
        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return MoCo(nn.Sequential(*layers), 8, dim=6, hidden=16, queue_size=3 * B, momentum=0.9, temperature=0.2)


def moco_inputs():
    g = torch.Generator().manual_seed(1)
    return torch.rand(2 * B, 3, 8, 8, generator=g), torch.rand(2 * B, 3, 8, 8, generator=g)


def moco_rank(rank: int, world: int, port: int, out: str) -> None:
    """One MoCo step on this rank's half of :func:`moco_inputs`, with and without BatchNorm."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    perms = []
    randperm = torch.randperm

    def recording(*args, **kw):  # MoCo's permutation; rank 0's is broadcast into it in place
        p = randperm(*args, **kw)
        perms.append(p)
        return p

    torch.randperm = recording
    q, k = moco_inputs()
    mine = slice(rank * B, (rank + 1) * B)
    for bn in (False, True):
        perms.clear()
        moco = small_moco(bn).train()
        torch.manual_seed(100 + rank)  # the ranks' own streams: only the broadcast keeps them in step
        step = moco(q[mine], k[mine])
        torch.save({"queue": moco.queue.clone(), "queue_ptr": moco.queue_ptr.clone(),
                    "logits": step["logits"].detach(), "loss": step["loss"].detach(),
                    "perm": perms[0] if perms else None}, Path(out) / f"moco{rank}-bn{int(bn)}.pt")
    # both ranks leave together: on torch 2.5 a rank that destroys its group after its peer has
    # exited can wait forever (seen under a loaded CPU)
    dist.barrier()
    dist.destroy_process_group()
