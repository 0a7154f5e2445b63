"""icm.train.scaling: the step a run is measured at (lowest validation loss, from its CSV
logs) and the checkpoint kept for it; shares of the pool that the curve trains on."""

from __future__ import annotations

from pathlib import Path

import pytest

from icm.train.scaling import _checkpoint, best_step, train_crops


def _run(tmp_path: Path, rows: list[str], version: str = "version_0") -> Path:
    logs = tmp_path / "logs" / version
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("epoch,step,train/loss,val/loss\n" + "\n".join(rows) + "\n")
    return tmp_path


def test_best_step_is_the_lowest_validation_loss_across_resumed_logs(tmp_path):
    run = _run(tmp_path, ["0,49,4.0,", "0,499,,3.10", "0,999,,2.95"])
    _run(tmp_path, ["0,1499,,3.20", "0,1999,3.5,"], version="version_1")  # a resumed run logs anew
    step, val, curve = best_step(run)
    assert (step, val) == (1000, 2.95)
    assert curve == [(500, 3.10), (1000, 2.95), (1500, 3.20)]


def test_best_step_without_validation_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no validation loss"):
        best_step(_run(tmp_path, ["0,49,4.0,"]))


def test_checkpoint_of_a_step(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    for n in (500, 1000, 1500):
        (ck / f"step-step={n}.ckpt").write_bytes(b"x")
    assert _checkpoint(tmp_path, 1000).name == "step-step=1000.ckpt"
    with pytest.raises(SystemExit, match="keep_checkpoints"):
        _checkpoint(tmp_path, 2000)


def test_train_crops_are_a_fixed_choice_of_the_run_photos():
    photos = ("skimage:rocket", "skimage:camera", "skimage:coins", "skimage:moon")
    crops, chosen = train_crops(photos, n=2)
    again, chosen2 = train_crops(tuple(reversed(photos)), n=2)
    assert chosen == chosen2 and len(chosen) == 2 and set(chosen) <= set(photos)
    assert len(crops) == 10 and all(c.shape == (224, 224, 3) for c in crops)
    assert all((a == b).all() for a, b in zip(crops, again))


def _row(recipe: str, photos: int, step: int, best: int, agreement: float) -> dict:
    return {"recipe": recipe, "train_photos": photos, "step": step, "best_step": best,
            "val_curve": [[500, 3.0 + photos / 1000], [1000, 2.0 + photos / 1000]],
            **{k: {"agreement": agreement, "bpp": 0.2} for k in ("train-crops", "test-crops", "labelme-crops")}}


def test_the_curve_averages_each_runs_steps_and_marks_its_chosen_one(tmp_path):
    from icm.train.scaling import _lowest_val_loss, _series, plot

    rows = [_row("big.yaml", 400, 500, 1000, 0.5), _row("big.yaml", 400, 1000, 1000, 0.7),
            _row("big.yaml", 400, 2000, 1000, 0.9),  # past max_step: left out
            _row("small.yaml", 90, 500, 500, 0.4), _row("small.yaml", 90, 1000, 500, 0.2)]
    n, mean, lo, hi, best = _series(rows, "test-crops", max_step=1500)
    assert n == [90, 400]  # ordered by training photos
    assert mean == pytest.approx([30.0, 60.0]) and lo == pytest.approx([10.0, 10.0]) and hi == pytest.approx([10.0, 10.0])
    assert best == pytest.approx([40.0, 70.0])
    assert _lowest_val_loss(rows) == ([90, 400], pytest.approx([2.09, 2.4]))
    plot(rows, str(tmp_path / "curve.png"), 1500, "test runs", control=[_row("c.yaml", 90, 500, 500, 0.1)])
    assert (tmp_path / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
