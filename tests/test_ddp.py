"""Every paper recipe under DDP on two CPU processes (gloo), at the paper's model sizes, on
tiny fixtures in the real data layouts; and what DDP must keep: the averaged gradient is
the single-process gradient of both ranks' batches, ranks read disjoint data, the ranks'
weights stay equal, only rank 0 writes, and MoCo's keys, queue and shuffled BatchNorm
across ranks are those of the single-process algorithm.

The runs start ``tests/ddp_worker.py`` as a user starts ``icm train``: Lightning's DDP
launcher starts the second rank as a copy of the same command.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_voc

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PAPER = ["bai2022/imagenet-step1", "bai2022/imagenet-step2-q1", "bai2022/imagenet-step2-q2",
         "bai2022/imagenet-step2-q3", "dicm/resnet50-stage1", "dicm/resnet50-stage2", "dicm/resnet50-stage3",
         "dicm/resnet50-stage4", "detection/resnet50-voc-detect", "detection/resnet50-coco-segment"]
DEFAULT_RUN = {"dicm/resnet50-stage1"}  # MoCo's gathers and shuffle-BN: the most DDP there is
STEPS = 3


@pytest.fixture(scope="module")
def layouts(tmp_path_factory, imagefolder_root):
    """ImageNet (ImageFolder with class folders), VOC (XML, two roots as 07+12) and COCO JSON."""
    from icm.tasks.synthetic import ensure_synthetic

    tmp = tmp_path_factory.mktemp("layouts")
    coco = ensure_synthetic(tmp / "coco", 8, size=(64, 64), split_name="train")
    return {"imagenet": imagefolder_root, "voc": [tiny_voc(tmp / "VOC2007", 4), tiny_voc(tmp / "VOC2012", 4)],
            "coco": coco}


def tiny_data(cfg: dict, layouts: dict) -> dict:
    """The recipe as written, but its data from the fixtures, 2 items per rank and step,
    no init checkpoint (the earlier stage's run is not here) and two CPU processes."""
    cfg = copy.deepcopy(cfg)
    cfg["model"]["init"] = None
    cfg["model"].pop("init_parts", None)
    d = cfg["data"]
    kind = d["kind"]
    if kind == "imagefolder":
        d.update(root=str(layouts["imagenet"]))
    elif kind == "voc":
        d.update(root=[str(r) for r in layouts["voc"]], val_root=str(layouts["voc"][0]))
    elif kind == "coco":
        d.update(annotations=str(layouts["coco"]), images=None, val_annotations=None, val_images=None)
    d.update(batch_size=2, workers=0)
    t = cfg["trainer"]
    t.pop("resume", None)
    t.update(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, ckpt_every=2, val_every=1000)
    return cfg


def run_ddp(cfg: dict, tmp: Path) -> list[dict]:
    """Run the recipe with two processes; returns both ranks' reports (see ddp_worker.py)."""
    cfg = copy.deepcopy(cfg)
    cfg["trainer"]["out_dir"] = str(tmp / "run")
    recipe, report = tmp / "recipe.yaml", tmp / "report"
    report.mkdir()
    recipe.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("ddp_worker.py")), str(recipe), str(report)],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    reports = [torch.load(report / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    reports[0]["seconds"] = time.monotonic() - started
    return reports


def _params_equal(a: dict, b: dict) -> list[str]:
    """Names whose hashes differ, BatchNorm running statistics aside (each rank keeps its own;
    DDP sends rank 0's to the others at every forward)."""
    return [k for k in a if a[k] != b[k] and not k.endswith(("running_mean", "running_var"))]


@contextlib.contextmanager
def one_thread():
    """The ranks' arithmetic: one thread each (other thread counts sum in other orders, which
    moves a float32 gradient of a randomly initialised network by up to ~1e-4 relative)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def reference_grads(cfg: dict, reports: list[dict]) -> dict[str, torch.Tensor]:
    """One process: the recipe's module, the gradient of the mean loss over both ranks'
    first batches, each under the seed its rank ran it with (its quantisation noise, drop
    path, anchor sampling)."""
    with one_thread():
        return _reference_grads(cfg, reports)


def _reference_grads(cfg: dict, reports: list[dict]) -> dict[str, torch.Tensor]:
    import lightning as L

    from icm.train.run import build

    cfg = copy.deepcopy(cfg)
    seed = int(cfg["trainer"].get("seed", 0))
    L.seed_everything(seed, verbose=False)
    _, module, _, _ = build(cfg)
    module.train()
    bf16 = cfg["trainer"].get("precision") == "bf16-mixed"
    for r in reports:
        s = r["step_seed"]
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s % 2**32)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = module.training_step(r["batch"], 0)
        (loss / len(reports)).backward()
    return {n: p.grad for n, p in module.named_parameters() if p.grad is not None}


def assert_grads_close(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for n in got:
        scale = float(want[n].abs().max()) or 1.0
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5 * scale, msg=n)


def _marks(name: str):
    return [] if name in DEFAULT_RUN else [pytest.mark.slow]


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in PAPER])
def test_paper_recipe_runs_under_ddp_on_two_cpu_processes(name, layouts, tmp_path):
    from icm.train.config import load_config

    cfg = tiny_data(load_config(CONFIGS / f"{name}.yaml"), layouts)
    if "step2" in name:  # bf16 is emulated on CPUs without it (25x slower); step 1 runs it, the qualities need not
        cfg["trainer"]["precision"] = "32-true"
    r0, r1 = run_ddp(cfg, tmp_path)
    print(f"{name}: {r0['seconds']:.0f} s for {STEPS} steps on 2 processes")
    # both ranks trained every step, on disjoint data, and stayed the same network
    for r in (r0, r1):
        assert len(r["losses"]) == STEPS and all(np.isfinite(r["losses"]))
    assert r0["losses"] != r1["losses"]  # each rank's loss is its own half's
    a, b = set(r0["indices"]), set(r1["indices"])
    assert len(a) == len(r0["indices"]) == len(r1["indices"]) == len(b) > 0 and not a & b
    assert not _params_equal(r0["weights"], r1["weights"])
    # only rank 0 writes: its checkpoints and logs; rank 1 nothing at all under out_dir
    assert r1["writes"] == []
    out = tmp_path / "run"
    assert any(w.startswith("os.rename") and w.endswith("checkpoints/last.ckpt") for w in r0["writes"])
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2 and "ExactResume" in ckpt["callbacks"]
    if cfg.get("stage") in (1, 3):  # MoCo: the queue holds both ranks' keys of every step
        assert int(ckpt["state_dict"]["moco.queue_ptr"]) == STEPS * 2 * 2 - 2 * 2  # saved after step 2
    else:  # DDP's gradient: the mean of both ranks', each as one process computes it on that rank's batch
        assert_grads_close(r0["grads"], reference_grads(cfg, [r0, r1]))
        assert_grads_close(r1["grads"], r0["grads"])
    if cfg.get("stage") == 4 or cfg.get("step") == 2:  # the run book's export line, on this run's checkpoint
        assert_exports(tmp_path, ckpt)


def assert_exports(tmp: Path, ckpt: dict) -> None:
    """``python -m icm.train.export RECIPE --ckpt … --out-dir … --no-measure`` writes every trained
    weight (dicm's ResNet-50 backbone included) as float16, and the file starts a recipe."""
    from icm.train.checkpoints import read_state
    from icm.train.config import load_config
    from icm.train.export import main as export

    recipe = tmp / "recipe.yaml"
    assert export([str(recipe), "--ckpt", str(tmp / "run" / "checkpoints" / "last.ckpt"),
                   "--out-dir", str(tmp / "weights"), "--no-measure"]) == 0
    (path,) = (tmp / "weights").glob("*.safetensors")
    state, _ = read_state(path)
    trained = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert state.keys() == trained.keys()
    for k, v in trained.items():
        want = v.half().float() if v.dtype == torch.float32 else v
        if "_table" in k or k.endswith(("cdf", "cdf_length", "offset")):
            continue  # coding tables: rebuilt from the rounded weights
        assert torch.equal(state[k], want), k
    cfg = load_config(recipe)
    from icm.train.run import build

    cfg["model"]["init"] = str(path)
    build(cfg)  # a later stage starts from the exported file


@pytest.mark.slow  # CI runs it (.ci/run, part 2b)
def test_ddp_gradient_equals_one_process_on_the_concatenated_batch(imagefolder_root, tmp_path):
    """bai2022 step 1 without stochastic depth: the loss is a per-image mean and nothing in
    the step is random, so DDP's averaged gradient must equal the gradient of one process
    that sees both ranks' batches as one batch of four."""
    import lightning as L

    from icm.train.run import build

    cfg = {"step": 1, "model": {"name": "bai2022-tiny", "quality": 1, "kwargs": {"num_classes": 2, "drop_path": 0.0}},
           "loss": {"alpha": 1.0, "beta": 0.001, "label_smoothing": 0.1},
           "data": {"kind": "imagefolder", "root": str(imagefolder_root), "crop": 32, "batch_size": 2,
                    "randaugment": True, "mixup": 0.8, "cutmix": 1.0},
           "optim": {"lr": 5e-4, "lr_batch": 512, "warmup_steps": 2},
           "trainer": {"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_steps": 2, "ckpt_every": 2,
                       "seed": 0, "val_every": 1000}}
    r0, r1 = run_ddp(cfg, tmp_path)
    L.seed_everything(0, verbose=False)
    _, module, _, _ = build(copy.deepcopy(cfg))
    module.train()
    both = [torch.cat([r0["batch"][i], r1["batch"][i]]) for i in (0, 1)]  # images, soft targets (mixup)
    with one_thread():
        module.training_step(both, 0).backward()
    want = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert_grads_close(r0["grads"], want)
    assert_grads_close(r1["grads"], want)
    # and the rank's own half alone would not have given it
    module.zero_grad()
    with one_thread():
        module.training_step(r0["batch"], 0).backward()
    alone = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert max(float((alone[n] - want[n]).abs().max()) for n in want) > 1e-4


# -- MoCo across ranks, at the unit level ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_moco_on_two_ranks_is_the_single_process_algorithm(tmp_path):
    """One pair of gloo ranks runs MoCo twice: with an encoder without BatchNorm, and with one."""
    import torch.multiprocessing as mp

    from ddp_worker import B, moco_inputs, moco_rank, small_moco

    mp.spawn(moco_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    q, k = moco_inputs()
    for bn in (False, True):
        ranks = [torch.load(tmp_path / f"moco{r}-bn{int(bn)}.pt", weights_only=False) for r in (0, 1)]
        _check_moco(bn, ranks, small_moco(bn).train(), q, k, B)


def _check_moco(bn: bool, ranks: list[dict], ref, q, k, B: int) -> None:
    perm = ranks[0]["perm"]
    assert torch.equal(perm, ranks[1]["perm"])  # one permutation, broadcast from rank 0
    # every rank ends with the same queue, pointer and key encoder
    for key in ("queue", "queue_ptr"):
        assert torch.equal(ranks[0][key], ranks[1][key])
    assert int(ranks[0]["queue_ptr"]) == 2 * B
    if not bn:
        # no BatchNorm: keys are per image, so two ranks of B are one process of 2B exactly
        out = ref(q, k)
        torch.testing.assert_close(ranks[0]["queue"], ref.queue, rtol=0, atol=1e-6)
        torch.testing.assert_close(torch.cat([ranks[0]["logits"], ranks[1]["logits"]]), out["logits"],
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, out["loss"], rtol=1e-5, atol=1e-6)
        return
    # shuffle-BN: each rank's key encoder normalised a sub-batch drawn from both ranks …
    subs = perm.view(2, B)
    assert all(((s < B).any() and (s >= B).any()) for s in subs)
    # … and the keys are those of that algorithm, done by hand in one process
    ref.momentum_update()
    with torch.no_grad():
        keys = torch.cat([torch.nn.functional.normalize(ref.projector_k(ref.encoder_k(k[s])), dim=1) for s in subs])
        keys = keys[torch.argsort(perm)]
        plain = torch.cat([torch.nn.functional.normalize(ref.projector_k(ref.encoder_k(k[h])), dim=1)
                           for h in (slice(0, B), slice(B, 2 * B))])
    torch.testing.assert_close(ranks[0]["queue"][:, :2 * B], keys.T, rtol=1e-5, atol=1e-6)
    assert float((plain - keys).abs().max()) > 1e-3  # without the shuffle, BatchNorm would give other keys
