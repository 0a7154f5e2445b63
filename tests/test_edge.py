"""icm-edge (edge/): the sender without PyTorch writes the files ``icm compress`` writes.

Its shared modules are verbatim copies of icm's, its senders are what ``icm
export-onnx`` writes from the shipped weights (regenerating them gives the same
graphs' outputs and integers), its files decode with icm, and its command line
keeps ``icm compress``'s rules.  Tests that run the graphs need onnxruntime
(``pip install 'icm[onnx]'``) and skip, saying so, without it.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import _subprocess_env
from PIL import Image

from icm import bitstream, codec
from icm.export_onnx import export, shipped
from icm.samples import fashion_mnist_samples, sample_paths

ROOT = Path(__file__).resolve().parents[1]
EDGE_SRC = ROOT / "edge" / "src"
MODELS = EDGE_SRC / "icm_edge" / "models"
sys.path.insert(0, str(EDGE_SRC))
_spec = importlib.util.spec_from_file_location("edge_regenerate", ROOT / "edge" / "regenerate.py")
regenerate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(regenerate)

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None,
                               reason="needs onnxruntime: pip install 'icm[onnx]' (or pip install onnxruntime)")


# -- what icm-edge carries --------------------------------------------------------------------------------

@pytest.mark.parametrize("mine, theirs", sorted(regenerate.SHARED.items()))
def test_shared_modules_are_verbatim_copies(mine, theirs):
    ours = (EDGE_SRC / "icm_edge" / mine).read_bytes()
    assert ours == (ROOT / "src" / "icm" / theirs).read_bytes(), \
        f"icm_edge/{mine} differs from icm/{theirs}: run python edge/regenerate.py"


def test_the_edge_package_imports_no_torch():
    # only numpy, onnxruntime, constriction, Pillow and the standard library
    allowed = {"numpy", "onnxruntime", "constriction", "PIL"}
    for path in (EDGE_SRC / "icm_edge").glob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and not words[1].startswith("."):
                top = words[1].split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names or top == "__future__", (path.name, line)
    deps = (ROOT / "edge" / "pyproject.toml").read_text()
    assert "torch" not in deps.split("dependencies = [")[1].split("]")[0]


def test_the_shipped_senders_are_those_of_the_shipped_weights():
    from icm.export_onnx import _weights_digest

    descs = {p.stem: json.loads(p.read_text()) for p in MODELS.glob("*.json")}
    assert set(descs) == {f"{n}-q{q}" for n, q in shipped()}
    for (name, q) in shipped():
        assert descs[f"{name}-q{q}"]["weights"] == _weights_digest(name, q), \
            f"{name} q{q}: its weights changed since the sender was exported: run python edge/regenerate.py"
    size = sum(p.stat().st_size for p in MODELS.iterdir())
    assert size < 40e6, f"{size / 1e6:.1f} MB of senders"


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _inputs(session, rng, side=64):
    """Random inputs of a graph: NCHW with its channels, ``side``² (or side/4)² at stride 4."""
    feeds = {}
    for i in session.get_inputs():
        c = i.shape[1]
        feeds[i.name] = rng.standard_normal((1, c, side, side)).astype(np.float32)
    return feeds


@needs_ort
@pytest.mark.parametrize("name, quality", shipped())
def test_regenerating_a_sender_gives_the_same_graphs_outputs(name, quality, tmp_path):
    pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'icm[onnx]'")
    export(name, quality, tmp_path)
    desc = json.loads((MODELS / f"{name}-q{quality}.json").read_text())
    again = json.loads((tmp_path / f"{name}-q{quality}.json").read_text())
    assert again == desc
    with np.load(MODELS / desc["tables"]) as a, np.load(tmp_path / desc["tables"]) as b:
        assert sorted(a.files) == sorted(b.files)
        for k in a.files:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    rng = np.random.default_rng(quality)
    graphs = [g for v in desc["graphs"].values() for g in ([v] if isinstance(v, str) else v)]
    for g in graphs:
        shipped_graph, regenerated = _session(MODELS / g), _session(tmp_path / g)
        feeds = _inputs(shipped_graph, rng, side=16 if g.endswith("h_a.onnx") else 64)
        for x, y in zip(shipped_graph.run(None, feeds), regenerated.run(None, feeds)):
            assert np.array_equal(x, y), g


# -- the same files -----------------------------------------------------------------------------------------

def _torch_file(name, quality, rgb):
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0)
    model = codec.get_model(name, quality)
    return codec.encode(model, x)[0]  # greyscale models take the luma there


def _crops():
    out = []
    for p in sample_paths():
        rgb = codec.read_rgb(p)
        out += [rgb[:224, :224], rgb[-224:, -224:], rgb[37:150, 11:300]]
    return [np.ascontiguousarray(c) for c in out]


@needs_ort
@pytest.mark.parametrize("name, quality", [("hyperprior", 2), ("dicm-lite0", 3), ("dicm-lite0", 6)])
def test_edge_files_are_icm_compress_files(name, quality):
    import icm_edge

    crops = _crops()
    same = 0
    for rgb in crops:
        ours, theirs = icm_edge.encode(rgb, name, quality), _torch_file(name, quality, rgb)
        f = bitstream.unpack(ours)
        assert f.header == bitstream.unpack(theirs).header
        same += ours == theirs
        if ours != theirs:  # a float result on the other side of a rounding boundary: a symbol or two
            a, b = codec.decode(ours, pixels=False)["y_hat"], codec.decode(theirs, pixels=False)["y_hat"]
            assert float((a != b).float().mean()) < 1e-3
    assert same >= len(crops) - 2, f"{same} of {len(crops)} byte-identical"


@needs_ort
def test_edge_codes_fashion_mnist_as_icm_does(tmp_path):
    import icm_edge

    for path, _, _ in fashion_mnist_samples()[:4]:
        rgb = codec.read_rgb(path)
        assert icm_edge.encode(path, "bai2022-fmnist", 8) == _torch_file("bai2022-fmnist", 8, rgb)
    with pytest.raises(icm_edge.IcmError, match="bai2022-fmnist codes 28x28 images"):
        icm_edge.encode(np.zeros((30, 28, 3), np.uint8), "bai2022-fmnist", 8)


def test_luma_is_torchs():
    from icm_edge.sender import Sender

    rgb = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    s = Sender.__new__(Sender)
    s.in_channels, s.stride = 1, 1
    model = codec.get_model("bai2022-fmnist", 8)
    want = codec.to_model_channels(model, torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255.0))
    assert np.array_equal(s.model_input(rgb), want.numpy())


# -- the command line ---------------------------------------------------------------------------------------

def _edge(capsys, *argv):
    from icm_edge import cli

    capsys.readouterr()
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, [line for line in out.err.splitlines() if line.strip()]


@needs_ort
def test_compress_keeps_icm_compress_rules(capsys, tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.ascontiguousarray(codec.read_rgb(sample_paths()[0])[:96, :160])).save(src)
    code, out, err = _edge(capsys, "compress", src, "-m", "dicm-lite0", "-q", "2")
    assert code == 0 and err == [] and out == f"{tmp_path / 'a.icm'}: dicm-lite0 q2, 160x96, " \
        f"{(tmp_path / 'a.icm').stat().st_size} bytes, {8 * (tmp_path / 'a.icm').stat().st_size / (160 * 96):.4f} bpp\n"
    first = (tmp_path / "a.icm").read_bytes()
    code, _, err = _edge(capsys, "compress", src, "-m", "dicm-lite0", "-q", "2")
    assert code == 2 and err == [(f"icm-edge: error: {src}: {tmp_path / 'a.icm'}: already exists; "
                                 "use --force to overwrite it")]  # as icm compress says it
    code, _, err = _edge(capsys, "compress", src, "-m", "dicm-lite0", "-q", "1", "-f")
    assert code == 0 and (tmp_path / "a.icm").read_bytes() != first
    code, _, err = _edge(capsys, "compress", src, "-o", src, "-f")
    assert code == 2 and err == [(f"icm-edge: error: {src}: output would overwrite its input {src}; "
                                 "choose another name with -o")]
    for argv, line in ((("-q", "9"), "-q 9: model 'hyperprior' has qualities 1, 2, 3, 4, 5"),
                       (("-m", "bai2022"), ("unknown model 'bai2022'; this icm-edge codes bai2022-fmnist, "
                                            "dicm-lite0, dicm-lite0-s8, dicm-lite0-s8-cutmix, hyperprior")),
                       ((src, "-o", tmp_path / "x.icm"), ("-o/--output takes a single input image; "
                                                          "use --out-dir for several"))):
        code, _, err = _edge(capsys, "compress", src, *argv)
        assert code == 2 and err == [f"icm-edge: error: {line}"], argv
    # a failing file is named, the others still coded
    code, _, err = _edge(capsys, "compress", tmp_path / "missing.png", src, "--out-dir", tmp_path / "out")
    assert code == 2 and err == [f"icm-edge: error: no such file: {tmp_path / 'missing.png'}"]
    assert (tmp_path / "out" / "a.icm").is_file()
    code, _, _ = _edge(capsys, "compress")
    assert code == 2  # usage


@needs_ort
def test_compress_warns_as_icm_compress_does(capsys, run_cli, tmp_path):
    rgb = np.ascontiguousarray(codec.read_rgb(sample_paths()[1])[:64, :64])
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "grey.png")
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    images = [tmp_path / n for n in ("alpha.png", "deep.png", "grey.png", "anim.gif")]
    for model in ("hyperprior", "dicm-lite0"):
        r = run_cli("compress", *images, "-m", model, "-q", "1", "--out-dir", tmp_path / "icm", "-f")
        assert r.code == 0, r.err
        code, _, err = _edge(capsys, "compress", *images, "-m", model, "-q", "1", "--out-dir", tmp_path / "edge", "-f")
        assert code == 0
        assert err == [line.replace("icm: warning:", "icm-edge: warning:") for line in r.err_lines]
        assert any("alpha.png: alpha channel dropped" in w for w in err)
        assert any("deep.png: 16-bit samples scaled to 8 bits" in w for w in err)
    # a colour picture for the greyscale model
    Image.fromarray(np.ascontiguousarray(rgb[:28, :28])).save(tmp_path / "colour.png")
    code, _, err = _edge(capsys, "compress", tmp_path / "colour.png", "-m", "bai2022-fmnist", "--out-dir", tmp_path)
    assert code == 0 and err == [(f"icm-edge: warning: {tmp_path / 'colour.png'}: colour dropped: "
                                 "bai2022-fmnist codes greyscale (luma)")]


class _Stub(http.server.BaseHTTPRequestHandler):
    """An icm serve stand-in: remembers the body, answers a classification row."""

    bodies: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Stub.bodies.append((self.path, self.headers.get("Authorization"), body))
        f = bitstream.unpack(body)
        row = {"model": "dicm-lite0", "quality": f.header.quality, "bytes": len(body), "bpp": f.bpp,
               "task": "classify", "top5": [{"index": 1, "label": "goldfish", "prob": 0.5}]}
        data = json.dumps(row).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@needs_ort
def test_send_posts_edge_files(capsys, tmp_path):
    import icm_edge

    server = http.server.HTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        src = tmp_path / "a.png"
        Image.fromarray(np.ascontiguousarray(codec.read_rgb(sample_paths()[2])[:64, :96])).save(src)
        (tmp_path / "t").write_text("secret\n")
        _Stub.bodies.clear()
        code, out, err = _edge(capsys, "send", url, src, "-q", "4", "--token-file", tmp_path / "t", "--json")
        assert code == 0 and err == []
        assert _Stub.bodies == [("/v1/analyze", "Bearer secret", icm_edge.encode(src, "dicm-lite0", 4))]
        assert json.loads(out)["file"] == str(src) and json.loads(out)["top5"][0]["label"] == "goldfish"
        (tmp_path / "a.icm").write_bytes(icm_edge.encode(src, "dicm-lite0", 2))
        code, out, _ = _edge(capsys, "send", url, tmp_path / "a.icm", tmp_path / "none.icm")
        assert code == 2 and out.splitlines()[0].startswith(f"{tmp_path / 'a.icm'}: dicm-lite0 q2, ")
        assert out.splitlines()[1] == "  1. goldfish  0.5000"
    finally:
        server.shutdown()


@needs_ort
def test_the_command_runs_where_torch_cannot_be_imported(tmp_path):
    src = tmp_path / "a.png"
    Image.fromarray(np.ascontiguousarray(codec.read_rgb(sample_paths()[0])[:64, :64])).save(src)
    script = ("import sys; sys.modules['torch'] = None\n"  # import torch raises
              "from icm_edge.cli import main\n"
              f"code = main(['compress', {str(src)!r}, '-m', 'dicm-lite0', '-q', '3'])\n"
              "assert not any(m.split('.')[0] == 'torch' and sys.modules[m] is not None for m in sys.modules)\n"
              "sys.exit(code)\n")
    env = dict(_subprocess_env(), PYTHONPATH=str(EDGE_SRC))
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                       check=False)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "a.icm").read_bytes() == _torch_file("dicm-lite0", 3, codec.read_rgb(src))
