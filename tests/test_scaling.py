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


def _rated(recipe: str, step: int, best: int, photo: tuple[float, float], labelme: tuple[float, float]) -> dict:
    return {"recipe": recipe, "step": step, "best_step": best,
            "photo-crops": {"images": 50, "agreement": photo[0], "bpp": photo[1]},
            "labelme-crops": {"images": 35, "agreement": labelme[0], "bpp": labelme[1]}}


def test_the_rate_plot_takes_each_run_at_its_picked_step(tmp_path):
    import json

    from icm.train.scaling import main, picked

    rows = [_rated("mix/a.yaml", 500, 1000, (0.4, 0.2), (0.5, 0.19)),
            _rated("mix/a.yaml", 1000, 1000, (0.6, 0.21), (0.7, 0.2)),
            _rated("cut8/b.yaml", 1500, 1500, (0.3, 0.1), (0.2, 0.1)),
            _rated("mix/a.yaml", 1000, 1000, (0.9, 0.9), (0.9, 0.9))]  # the same run merged twice: the first kept
    got = picked(rows)
    assert [(r["recipe"], r["step"], r["photo-crops"]["agreement"]) for r in got] == [("mix/a.yaml", 1000, 0.6),
                                                                                       ("cut8/b.yaml", 1500, 0.3)]
    runs, line = tmp_path / "runs.json", tmp_path / "line.json"
    runs.write_text(json.dumps(rows))
    line.write_text(json.dumps([_rated("mix/q1.yaml", 500, 500, (0.5, 0.12), (0.54, 0.12)),
                                _rated("mix/q3.yaml", 500, 500, (0.76, 0.26), (0.66, 0.25))]))
    out = tmp_path / "rate.png"
    assert main(["--out", str(tmp_path / "all.json"), "--from-json", str(runs), "--line-json", str(line),
                 "--rate-plot", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "all.json").read_text()) == rows
