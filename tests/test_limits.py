"""Decode limits decided from the header (``icm.limits``): a few bytes declaring a huge
picture are refused before any model is built or anything allocated; outputs that
are not finite never reach a caller or ``--json``."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from icm import bitstream, codec
from icm.bitstream import Header
from icm.errors import BitstreamError
from icm.limits import DEFAULT_MAX_PIXELS, CostModel, Limits, LimitError, check, resolve
from icm.models import list_models, model_info

from conftest import shipped_qualities

SHIPPED = [n for n in ("hyperprior", "bai2022-fmnist", "dicm-lite0") if shipped_qualities(n)]
HUGE = [(4096, 4096), (4096, 65536)]  # (height, width): 16.8 Mpx and the format's maximum, 268 Mpx


def _declaring(name: str, height: int, width: int) -> bytes:
    """A well-formed file (magic, CRC, section table) of ``name`` declaring ``height × width``."""
    info = model_info(name)
    q = shipped_qualities(name)[0] if shipped_qualities(name) else info.qualities[0]
    sections = 1 if name.startswith("dicm") else 2
    return bitstream.pack(Header(info.model_id, q, height, width), [bytes(16)] * sections)


@pytest.fixture
def nothing_built(monkeypatch):
    """Any attempt to build a model is a test failure."""
    def refuse(*a, **k):
        raise AssertionError("a model was built for a file the header should have refused")

    monkeypatch.setattr(codec, "_shipped_model", refuse)
    monkeypatch.setattr(codec, "create_model", refuse)


@pytest.mark.parametrize("height,width", HUGE)
@pytest.mark.parametrize("name", SHIPPED)
def test_huge_declarations_are_refused_from_the_header(name, height, width, nothing_built):
    data = _declaring(name, height, width)
    info = model_info(name)
    calls = [lambda: codec.decode(data, pixels=info.pixel_decoder)]
    if info.tasks:
        calls.append(lambda: codec.analyze(data))
    t = time.perf_counter()
    for call in calls:
        with pytest.raises(LimitError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "--max-pixels" in msg and f"{width}x{height}" in msg, msg
        assert "GB" in msg  # it says what decoding would need
    assert time.perf_counter() - t < 1.0


def test_every_registered_model_declares_a_cost():
    for name in list_models():
        cost = model_info(name).cost
        assert cost is not None, name
        small, big = cost(224, 224), cost(2048, 2048)
        assert 0 < small.memory_bytes < big.memory_bytes and 0 < small.seconds < big.seconds, name


def test_transformer_cost_is_quadratic_in_tokens():
    m = model_info("bai2022-fmnist").cost
    assert m(2048, 2048).seconds > 10 * m(1024, 1024).seconds > 100 * m(256, 256).seconds
    # a 5 kB file declaring 1024² would have taken over a minute: over the default 30 s
    with pytest.raises(LimitError, match="--max-seconds"):
        check("bai2022-fmnist", m, 1024, 1024, resolve())
    check("bai2022-fmnist", m, 1024, 1024, resolve(Limits(max_seconds=1e4)))


def test_limits_resolve_and_each_limit_names_its_option():
    lim = resolve()
    assert lim.max_pixels == DEFAULT_MAX_PIXELS and lim.max_memory > 0
    assert resolve(max_pixels=0).max_pixels is None
    with pytest.raises(Exception, match=">= 0"):
        resolve(max_pixels=-1)
    cm = CostModel(bytes_per_pixel=1e6, seconds_per_pixel=0.0)
    with pytest.raises(LimitError, match="more memory than the limit"):
        check("m", cm, 1000, 1000, resolve(max_pixels=0))
    assert check("m", cm, 10, 10, resolve()).memory_bytes == 1e8


@pytest.mark.parametrize("name", SHIPPED)
def test_raised_limit_lets_a_big_valid_file_decode(name):
    """Within the raised limit, a real file larger than the default decodes (and its
    header's price was checked, not skipped)."""
    info = model_info(name)
    q = shipped_qualities(name)[0]
    model = codec.get_model(name, q)
    h, w = (64, 1024) if name != "bai2022-fmnist" else (28, 280)
    x = torch.full((1, 3, h, w), 0.5)
    data = codec.encode(model, x)[0]
    limit = h * w - 1
    with pytest.raises(LimitError):
        (codec.decode if info.pixel_decoder else codec.analyze)(data, max_pixels=limit)
    out = codec.decode(data, pixels=False, max_pixels=h * w)
    assert out["y_hat"].shape[0] == 1


def test_non_finite_outputs_are_an_error_and_json_stays_valid(run_cli, tmp_path, monkeypatch):
    name = "bai2022-fmnist" if shipped_qualities("bai2022-fmnist") else None
    if name is None:
        pytest.skip("no shipped classifier weights")
    q = shipped_qualities(name)[0]
    model = codec.get_model(name, q)
    path = tmp_path / "a.icm"
    path.write_bytes(codec.encode(model, torch.full((1, 3, 28, 28), 0.5))[0])
    good = tmp_path / "b.icm"
    good.write_bytes(path.read_bytes())
    real = type(model).analyze
    calls = {"n": 0}

    def poisoned(self, compressed, task=None):
        calls["n"] += 1
        out = real(self, compressed, task=task)
        return out.fill_(float("nan")) if calls["n"] == 1 else out

    monkeypatch.setattr(type(model), "analyze", poisoned)
    with pytest.raises(BitstreamError, match="not finite"):
        codec.analyze(path.read_bytes())
    calls["n"] = 0
    r = run_cli("analyze", path, good, "--json")
    assert r.code == 2
    assert len(r.err_lines) == 1 and str(path) in r.err_lines[0] and "not finite" in r.err_lines[0]
    rows = [json.loads(line) for line in r.out.splitlines()]  # valid JSON: one row, the good file's
    assert [row["file"] for row in rows] == [str(good)]


@pytest.mark.parametrize("height,width", HUGE)
def test_cli_refuses_huge_declarations_in_one_line(run_cli, tmp_path, height, width):
    for name in SHIPPED:
        path = tmp_path / f"{name}-{width}.icm"
        path.write_bytes(_declaring(name, height, width))
        command = "decompress" if model_info(name).pixel_decoder else "analyze"
        t = time.perf_counter()
        r = run_cli(command, path)
        assert time.perf_counter() - t < 1.0
        assert r.code == 2 and len(r.err_lines) == 1, r.err
        assert str(path) in r.err_lines[0] and "--max-pixels" in r.err_lines[0]
        assert not path.with_name(path.stem + ".decoded.png").exists()
    r = run_cli("analyze", path, "--max-seconds", "0")
    assert r.code == 2 and "--max-seconds must be > 0" in r.err


def test_refusal_does_not_grow_memory(tmp_path):
    """In a fresh process: refusing the format's largest declaration leaves the peak
    memory where loading the package put it."""
    if not SHIPPED:
        pytest.skip("no shipped weights")
    path = tmp_path / "max.icm"
    path.write_bytes(_declaring(SHIPPED[0], 4096, 65536))
    script = (
        "import resource, sys\n"
        "from icm import codec\n"
        "from icm.limits import LimitError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        f"    codec.analyze(open({str(path)!r}, 'rb').read()) if codec.model_info({SHIPPED[0]!r}).tasks else "
        f"codec.decode(open({str(path)!r}, 'rb').read())\n"
        "except LimitError:\n"
        "    pass\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grew_kb = int(out.stdout.strip().splitlines()[-1])
    assert grew_kb < 50_000, grew_kb  # under 50 MB (a model alone is ~150 MB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss > 0


@pytest.mark.slow
@pytest.mark.parametrize("name,side,task", [("hyperprior", 2048, None), ("dicm-lite0", 2048, None), ("dicm-lite0-s8", 2048, None),
                                            ("dicm-lite0", 2048, "detect"), ("dicm-lite0", 2048, "segment"),
                                            ("bai2022-fmnist", 448, None)])
def test_a_raised_limit_decode_stays_within_its_price(name, side, task, tmp_path):
    """A real file above the default pixel limit's smaller cousins, decoded (or analysed for
    ``task``) in a fresh process at one thread: peak memory growth and wall time stay under
    the header's price.  For the tasks, a textured picture in which the heads find their
    most boxes (100, each with a mask)."""
    if not shipped_qualities(name):
        pytest.skip("no shipped weights")
    q = shipped_qualities(name)[0]
    if task is None:
        x = torch.full((1, 3, side, side), 0.5)
    else:
        g = torch.Generator().manual_seed(0)
        x = F.interpolate(torch.rand(1, 3, side // 16, side // 16, generator=g), size=(side, side), mode="bilinear")
        x = 0.7 * x + 0.3 * torch.rand(1, 3, side, side, generator=g)
    path = tmp_path / "f.icm"
    path.write_bytes(codec.encode(codec.get_model(name, q), x)[0])
    script = (
        "import resource, sys, time, torch\n"
        "torch.set_num_threads(1)\n"
        "from icm import codec\n"
        f"data = open({str(path)!r}, 'rb').read()\n"
        "f = codec.parse(data)\n"
        "info = codec.model_info_by_id(f.header.model_id)\n"
        f"task = {task!r}\n"
        "model = codec.get_model(info.name, f.header.quality)\n"
        "if task:\n"
        "    codec.heads_for(model, task)  # built before the measure, as analyze keeps them\n"
        "cost = codec.check_limits(f, max_pixels=0, task=task)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "t, n = time.perf_counter(), -1\n"
        "if info.pixel_decoder:\n"
        "    codec.decode(data, max_pixels=0)\n"
        "else:\n"
        "    out = codec.analyze(data, max_pixels=0, task=task)['output']\n"
        "    n = len(out[0]['boxes']) if task else -1\n"
        "dt = time.perf_counter() - t\n"
        "grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before\n"
        "print(grew, cost.memory_bytes, dt, cost.seconds, n)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    grew, mem, dt, secs, boxes = map(float, out.stdout.split())
    if task is not None:
        assert boxes == 100  # the task's most expensive case: every box the heads may answer
    assert grew <= mem and dt <= 2 * secs, (grew, mem, dt, secs)  # time: 2x for a noisy, shared machine


def test_tasks_that_cost_more_than_the_decode_are_priced_with_it():
    from icm.limits import CostModel, Limits, LimitError, check

    cm = CostModel(bytes_per_pixel=100, seconds_per_pixel=1e-6, pad_to=16, tasks=(("segment", 900, 2e-6),))
    plain, seg = cm(1000, 1000), cm(1000, 1000, "segment")
    assert plain.memory_bytes == 100 * 1008 * 1008 and seg.memory_bytes == 1000 * 1008 * 1008
    assert seg.seconds == pytest.approx(3e-6 * 1008 * 1008) and cm(1000, 1000, "classify") == plain
    limits = Limits(max_pixels=None, max_memory=int(5e8), max_seconds=None)
    check("m", cm, 1000, 1000, limits)  # the decode fits
    with pytest.raises(LimitError, match="decoding it for segment would need about 1.0 GB"):
        check("m", cm, 1000, 1000, limits, task="segment")


def test_dicm_lite0_segment_is_priced_above_its_decode():
    from icm.models import model_info

    cost = model_info("dicm-lite0").cost
    assert cost(2160, 3840, "segment").memory_bytes > 4 * cost(2160, 3840).memory_bytes
    assert cost(2160, 3840, "detect").seconds > cost(2160, 3840).seconds
