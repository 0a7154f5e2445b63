"""``icm train CONFIG --dry-run``: the recipe's network counted part by part, a few real
steps timed and measured, and the projection at the recipe's dataset size and device count."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from icm.train.dryrun import dry_run, parts, stand_in_data

SMALL_LITE0 = {"re_dims": [16], "re_depths": [], "dims": [24, 48, 48], "M": 48, "N": 16, "hyper_dim": 32,
               "hyper_heads": 2, "filter_size": [8, 8], "pretrained_backbone": False}


def stage4(root, **data) -> dict:
    return {"stage": 4, "model": {"name": "dicm-lite0", "quality": 4, "kwargs": dict(SMALL_LITE0),
                                  "init": "runs/nowhere/checkpoints/last.ckpt"},
            "data": {"kind": "imagefolder", "root": str(root), "crop": 64, "batch_size": 4, **data},
            "optim": {"name": "adamw", "lr": 1e-4},
            "trainer": {"max_steps": 200000, "accelerator": "gpu", "devices": 8, "strategy": "ddp"}}


def test_dry_run_counts_measures_and_projects_with_a_stand_in(tmp_path):
    from icm.train.run import build

    cfg = stage4(tmp_path / "not-here", epoch_images=1281167)
    r = dry_run(cfg, steps=3)
    assert any("stand-in batch of 4 pictures" in n for n in r["notes"])
    assert any("random weights" in n for n in r["notes"])
    # the parts add up to the training module, and only the codec trains in stage 4
    plan = {**cfg, "model": {**cfg["model"], "init": None}, "data": {**cfg["data"], "root": str(tmp_path / "d")}}
    stand_in_data("imagefolder", tmp_path / "d", 4)
    _, module, _, _ = build(plan)
    assert r["parameters"] == sum(p.numel() for p in module.parameters())
    assert r["trained"] == sum(p.numel() for p in module.parameters() if p.requires_grad)
    trained = {p["part"] for p in r["parts"] if p["trained"]}
    assert trained == {"model.g_a", "model.g_s", "model.latent"}
    assert r["step_s"] > 0 and r["warmup_step_s"] > 0 and r["process_peak_bytes"] > 100 * 2**20
    assert r["step_peak_bytes"] is None or 0 <= r["step_peak_bytes"] < r["process_peak_bytes"]
    # the projection: 8 devices × 4 images per step
    assert (r["devices"], r["global_batch"]) == (8, 32)
    assert r["steps_per_epoch"] == math.ceil(1281167 / 32)
    assert r["epoch_s"] == pytest.approx(r["steps_per_epoch"] * r["step_s"])
    assert r["schedule_s"] == pytest.approx(200000 * r["step_s"])


def test_dry_run_reads_the_dataset_size_where_the_data_is_here(imagefolder_root):
    r = dry_run(stage4(imagefolder_root), steps=2)
    assert r["epoch_images"] == 16 and r["steps_per_epoch"] == 1  # 16 images, 32 per step
    assert not any("stand-in" in n for n in r["notes"])


def test_parts_count_a_shared_parameter_once():
    from torch import nn

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Module()
            self.model.a = nn.Linear(3, 4)
            self.model.b = nn.Linear(4, 2)
            self.model.b.requires_grad_(False)
            self.head = nn.Sequential(self.model.a, nn.Linear(4, 1))  # shares model.a

    rows = {n: (t, tr) for n, t, tr in parts(M())}
    assert rows == {"model.a": (16, 16), "model.b": (10, 0), "head.1": (5, 5)}
    assert sum(t for t, _ in rows.values()) == sum(p.numel() for p in M().parameters())


def test_cli_dry_run_prints_the_table_and_json(run_cli, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(stage4(tmp_path / "not-here", epoch_images=1000)))
    out = run_cli("train", str(path), "--dry-run", "--steps", "2")
    assert out.code == 0, out.err
    text = out.out
    assert "model.g_a" in text and "peak memory of a step" in text and "32 steps per epoch" in text
    assert not (tmp_path / "runs").exists()
    out = run_cli("train", str(path), "--dry-run", "--steps", "2", "--json")
    r = json.loads(out.out.strip().splitlines()[-1])
    assert r["steps_per_epoch"] == 32 and r["max_steps"] == 200000
    out = run_cli("train", str(path), "--dry-run", "--steps", "1")
    assert out.code == 2 and "at least 2 steps" in out.err and len(out.err_lines) == 1
