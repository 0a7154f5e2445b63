"""The command line's thread policy (``icm.threads``): explicit settings win, and a
busy machine gets fewer threads, never fewer than one.  The speed it buys is
measured in ``benchmarks/threads.py``, not here."""

from __future__ import annotations

import pytest
import torch

from icm import threads
from icm.errors import IcmError


@pytest.fixture(autouse=True)
def _keep_torch_threads(monkeypatch):
    for name in threads.ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores,busy,expected", [(2, 0, 2), (2, 1, 1), (2, 2, 1), (2, 5, 1), (8, 3, 5), (1, 0, 1)])
def test_free_cores_less_busy_ones_at_least_one(monkeypatch, cores, busy, expected):
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    assert threads.default_threads() == expected


@pytest.mark.parametrize("name", threads.ENV_VARS)
def test_environment_wins_over_the_load(monkeypatch, name):
    monkeypatch.setattr(threads, "busy_cores", lambda: 99)
    monkeypatch.setenv(name, "3")
    assert threads.default_threads() == 3


@pytest.mark.parametrize("raw", ["0", "-2", "two", "1.5"])
def test_a_bad_environment_value_is_one_clear_error(monkeypatch, raw):
    monkeypatch.setenv("OMP_NUM_THREADS", raw)
    with pytest.raises(IcmError, match=r"OMP_NUM_THREADS=.*whole number of threads >= 1"):
        threads.default_threads()


def test_busy_cores_sees_a_process_that_just_started(monkeypatch):
    """The load average lags by a minute; the runnable count does not."""
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    monkeypatch.setattr(threads, "_runnable_now", lambda reads=3: 2)
    assert threads.busy_cores() == 2
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.6, 0.5, 0.1))
    monkeypatch.setattr(threads, "_runnable_now", lambda reads=3: 0)
    assert threads.busy_cores() == 2


def test_runnable_now_reads_this_machine():
    n = threads._runnable_now()
    assert isinstance(n, int) and n >= 0
    assert 1 <= threads.usable_cores() <= 4096


def test_apply_sets_torch(monkeypatch):
    assert threads.apply(1) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("ICM_NUM_THREADS", "2")
    assert threads.apply() == 2 and torch.get_num_threads() == 2


def test_cli_threads_option(run_cli, tmp_path, monkeypatch):
    from PIL import Image

    import numpy as np

    path = tmp_path / "g.png"
    Image.fromarray(np.tile(np.arange(32, dtype=np.uint8)[None, :, None] * 8, (32, 1, 3))).save(path)
    r = run_cli("--threads", "0", "models")
    assert r.code == 2 and "expected a number >= 1" in r.err
    torch.set_num_threads(2)
    r = run_cli("--threads", "1", "models")
    assert r.code == 0 and torch.get_num_threads() == 1
    # without --threads the policy applies to commands that compute, from the environment here
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    r = run_cli("compress", path, "-m", "hyperprior-tiny", "-o", tmp_path / "g.icm")
    assert torch.get_num_threads() == 1, r.err
    monkeypatch.setenv("OMP_NUM_THREADS", "zero")
    r = run_cli("compress", path, "-o", tmp_path / "h.icm")
    assert r.code == 2 and r.err.strip().splitlines() == [
        "icm: error: OMP_NUM_THREADS='zero': give a whole number of threads >= 1"]
    assert not (tmp_path / "h.icm").exists()
