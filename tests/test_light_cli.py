"""A command line that answers at once: ``icm --help``, ``icm models``, ``icm info`` and every
refusal decided from a file's header (size limits, unknown model or quality, wrong task,
corrupted, truncated or foreign files) run without importing torch, timm or torchvision.

Each command runs in a fresh interpreter that reports, after the command, which of those
modules it loaded; the files are real ones, coded with the shipped weights, and hostile
variants of them.  The registry's facts (``icm/models/_facts.py``) are checked against the
families' own modules, which are imported only to build a model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _subprocess_env, gradient_image, shipped_qualities
from PIL import Image

from icm import bitstream, codec
from icm.bitstream import Header
from icm.models import create_model, list_models, model_info

HEAVY = ("torch", "timm", "torchvision")
GOLDEN = Path(__file__).with_name("golden")

# Runs `icm ARGS` as the console script does (icm.cli.main), then writes its exit status and
# the heavy modules it loaded to the file named first.
PROBE = f"""\
import json, sys
out, argv = sys.argv[1], sys.argv[2:]
sys.argv = ["icm", *argv]
try:
    from icm.cli import main
    code = main(argv)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
sys.stdout.flush()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})
with open(out, "w") as f:
    json.dump({{"code": code, "heavy": heavy}}, f)
"""


def probe(tmp_path: Path, *argv) -> tuple[int, str, str, list[str]]:
    """``(exit status, stdout, stderr, heavy modules loaded)`` of ``icm ARGV`` in a fresh interpreter."""
    report = tmp_path / "probe.json"
    p = subprocess.run([sys.executable, "-c", PROBE, str(report), *map(str, argv)], capture_output=True,
                       text=True, env=_subprocess_env(), timeout=120, check=False)
    assert report.is_file(), p.stderr
    r = json.loads(report.read_text())
    return r["code"], p.stdout, p.stderr, r["heavy"]


def _lowest(name: str) -> int:
    qs = shipped_qualities(name)
    if not qs:
        pytest.skip(f"no shipped weights for {name}")
    return min(qs)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Real files of three shipped models (the normal API, one thread), and hostile variants."""
    d = tmp_path_factory.mktemp("light")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        real = {
            "hyperprior": codec.encode(codec.get_model("hyperprior", _lowest("hyperprior")), gradient_image(48, 64))[0],
            "dicm-lite0": codec.encode(codec.get_model("dicm-lite0", _lowest("dicm-lite0")), gradient_image(64, 64))[0],
            "bai2022-fmnist": codec.encode(codec.get_model("bai2022-fmnist", _lowest("bai2022-fmnist")),
                                           gradient_image(28, 28))[0],
        }
    finally:
        torch.set_num_threads(before)
    out = {}
    for name, data in real.items():
        out[name] = d / f"{name}.icm"
        out[name].write_bytes(data)

    def write(name: str, data: bytes) -> None:
        out[name] = d / f"{name}.icm"
        out[name].write_bytes(data)

    lite = real["dicm-lite0"]
    f = bitstream.unpack(lite)
    h = f.header
    write("truncated", lite[: len(lite) // 2])
    write("bad-crc", lite[:-1] + bytes([lite[-1] ^ 0xFF]))
    flipped = bytearray(lite)
    flipped[len(lite) // 2] ^= 0x10
    write("flipped-payload", bytes(flipped))
    write("huge", bitstream.pack(Header(h.model_id, h.quality, 4096, 65536), f.sections))
    write("huge-hyperprior", bitstream.pack(Header(model_info("hyperprior").model_id, _lowest("hyperprior"),
                                                   4096, 4096), bitstream.unpack(real["hyperprior"]).sections))
    # a size under the pixel limit whose decode is priced over 30 s of CPU (attention over 65536 tokens)
    fm = bitstream.unpack(real["bai2022-fmnist"])
    write("slow-fmnist", bitstream.pack(Header(fm.header.model_id, fm.header.quality, 1024, 1024), fm.sections))
    write("unknown-id", bitstream.pack(Header(99, 1, h.height, h.width), f.sections))
    write("bad-quality", bitstream.pack(Header(h.model_id, 42, h.height, h.width), f.sections))
    write("empty", b"")
    png = d / "photo.png"
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(png)
    out["png"] = png
    return out


def _one_line(err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("icm: error:") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# -- what answers -----------------------------------------------------------------------------------------


def test_help_and_version(tmp_path):
    code, out, err, heavy = probe(tmp_path, "--help")
    assert code == 0 and out.startswith("usage: icm") and "analyze" in out and heavy == [], (err, heavy)
    code, out, _, heavy = probe(tmp_path, "analyze", "--help")
    assert code == 0 and "--max-pixels" in out and heavy == []
    code, out, _, heavy = probe(tmp_path, "--version")
    assert code == 0 and out.startswith("icm ") and heavy == []


def test_models(tmp_path):
    code, out, err, heavy = probe(tmp_path, "models")
    assert code == 0 and heavy == [], (err, heavy)
    assert {line.split()[0] for line in out.splitlines()[1:] if line.strip()} >= set(list_models())
    code, out, _, heavy = probe(tmp_path, "models", "--json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert code == 0 and heavy == [] and set(rows) == set(list_models())
    assert rows["dicm-lite0"]["weights"] == shipped_qualities("dicm-lite0") and not rows["dicm-lite0"]["pixels"]


def test_info_of_real_files(files, tmp_path):
    names = ("hyperprior", "dicm-lite0", "bai2022-fmnist")
    code, out, err, heavy = probe(tmp_path, "info", *(files[n] for n in names))
    assert code == 0 and err == "" and heavy == [], (err, heavy)
    lines = out.splitlines()
    assert len(lines) == 3
    for name, line in zip(names, lines):
        f = codec.read(files[name])
        assert line.startswith(f"{files[name]}: {name} q{f.header.quality}, {f.header.width}x{f.header.height}, "
                               f"{f.size} bytes"), line
    code, out, _, heavy = probe(tmp_path, "info", "--json", files["dicm-lite0"])
    row = json.loads(out)
    assert code == 0 and heavy == [] and (row["model"], row["bytes"]) == ("dicm-lite0", files["dicm-lite0"].stat().st_size)


def test_info_of_a_file_written_before_a_renumbering(tmp_path):
    path = GOLDEN / "dicm-lite0-id7-q1.icm"
    code, out, err, heavy = probe(tmp_path, "info", path)
    assert code == 0 and heavy == [] and "dicm-lite0 q6 (written as model id 7 q1" in out, (out, err)


def test_data_list(tmp_path):
    code, out, err, heavy = probe(tmp_path, "data", "list")
    assert code == 0 and "source" in out and heavy == [], (err, heavy)


# -- what is refused from the header ----------------------------------------------------------------------

REFUSALS = [
    # (command, file, words of the one error line)
    ("analyze", "huge", ("65536x4096", "--max-pixels")),
    ("analyze", "slow-fmnist", ("bai2022-fmnist at 1024x1024", "--max-seconds")),
    ("decompress", "huge-hyperprior", ("4096x4096", "--max-pixels")),
    ("analyze", "unknown-id", ("unknown model id 99",)),
    ("decompress", "unknown-id", ("unknown model id 99",)),
    ("analyze", "bad-quality", ("'dicm-lite0' has no quality 42",)),
    ("analyze", "hyperprior", ("'hyperprior' has no analysis tasks",)),
    ("analyze --task detect", "bai2022-fmnist", ("'bai2022-fmnist' does not run task 'detect'",)),
    ("analyze --task segment", "hyperprior", ("has no analysis tasks",)),
    ("decompress", "dicm-lite0", ("'dicm-lite0' carries no pixel decoder",)),
    ("analyze", "truncated", ("checksum mismatch",)),
    ("analyze", "bad-crc", ("checksum mismatch",)),
    ("decompress", "flipped-payload", ("checksum mismatch",)),
    ("info", "truncated", ("checksum mismatch",)),
    ("info", "empty", ("not an .icm file",)),
    ("analyze", "png", ("not an .icm file (bad magic bytes)",)),
    ("analyze", "missing", ("no such file",)),
]


@pytest.mark.parametrize("command,name,words", REFUSALS, ids=[f"{c}-{n}" for c, n, _ in REFUSALS])
def test_a_refusal_from_the_header_imports_no_torch(files, tmp_path, command, name, words):
    path = files.get(name, tmp_path / "missing.icm")
    out_png = tmp_path / "out.png"
    cmd = command.split()
    args = [*cmd, path, *(["-o", out_png] if cmd[0] == "decompress" else [])]
    code, out, err, heavy = probe(tmp_path, *args)
    assert code == 2 and out == "", (out, err)
    _one_line(err, str(path), *words)
    assert heavy == [], f"icm {command} {name}: imported {heavy}"
    assert not out_png.exists()


def test_every_file_of_many_is_refused_without_torch(files, tmp_path):
    bad = [files[n] for n in ("huge", "unknown-id", "truncated", "png")]
    code, _, err, heavy = probe(tmp_path, "analyze", *bad)
    assert code == 2 and heavy == []
    assert [line.split(": ")[2] for line in err.splitlines()] == [str(p) for p in bad]


def test_options_refused_before_work_import_no_torch(files, tmp_path):
    code, _, err, heavy = probe(tmp_path, "compress", files["png"], "-m", "nope")
    assert code == 2 and heavy == []
    _one_line(err, "unknown model 'nope'")
    code, _, err, heavy = probe(tmp_path, "compress", files["png"], "-m", "dicm-lite0", "-q", "99")
    assert code == 2 and heavy == []
    _one_line(err, "-q 99")
    code, _, err, heavy = probe(tmp_path, "--threads", "2", "info", files["dicm-lite0"])
    assert code == 0 and heavy == [], err


def test_the_probe_sees_torch_where_work_needs_it(files, tmp_path):
    # the audit itself works, and the lazy path still answers: analysing a real file loads torch
    code, out, err, heavy = probe(tmp_path, "--threads", "1", "analyze", files["bai2022-fmnist"], "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "bai2022-fmnist" and "torch" in heavy


# -- the light registry ---------------------------------------------------------------------------------


def test_import_icm_and_the_registry_import_no_torch(run_python):
    script = (
        "import json, sys\n"
        "import icm, icm.models, icm.preflight, icm.limits, icm.bitstream\n"
        "from icm import cli\n"
        "cli.build_parser()\n"
        "from icm.models import _registry\n"
        "rows = [_registry.model_row(n) for n in icm.list_models()]\n"
        "info = icm.models.model_info_by_id(7)\n"
        "cost = info.cost(2160, 3840)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision'))\n"
        "families = sorted(m for m in ('icm.models.hyperprior', 'icm.models.bai2022', 'icm.models.dicm') if m in sys.modules)\n"
        "icm.create_model('hyperprior-tiny', quality=1, pretrained=False)\n"
        "after = sorted(m for m in sys.modules if m.split('.')[0] in ('timm', 'torchvision') or m == 'icm.models.dicm')\n"
        "print(json.dumps([loaded, families, info.name, len(rows), cost.seconds > 0, after]))\n")
    loaded, families, name, n, priced, after = json.loads(run_python(script).stdout.splitlines()[-1])
    assert loaded == [] and families == [], (loaded, families)
    assert name == "dicm-lite0" and n == len(list_models()) and priced
    assert after == []  # building a hyperprior imports its family only


def test_the_facts_agree_with_the_families():
    from icm.models import bai2022, dicm, hyperprior
    from icm.models._facts import LITE0_RETIRED_IDS
    from icm.models._registry import resolve_hook

    tables = {"hyperprior": hyperprior.LAMBDAS, "hyperprior-tiny": {1: None}, "bai2022": bai2022.QUALITIES,
              "bai2022-fmnist": bai2022.FMNIST_QUALITIES, "bai2022-tiny": bai2022.QUALITIES,
              "dicm": dicm.QUALITIES, "dicm-lite0": dicm.LITE0_QUALITIES,
              "dicm-lite0-s8": dicm.LITE0_S8_QUALITIES, "dicm-lite0-s8-cutmix": dicm.LITE0_S8_CUTMIX_QUALITIES}
    assert set(tables) <= set(list_models())
    for name, table in tables.items():
        info = model_info(name)
        assert info.qualities == tuple(table), name
        assert isinstance(info.builder, str) and callable(resolve_hook(info.builder)), name
        assert all(isinstance(h, str) for h in (info.train, info.export)) and info.cost is not None, name
    assert model_info("dicm-lite0").retired_ids == LITE0_RETIRED_IDS
    # the facts say what the built models are
    for name in ("hyperprior-tiny", "bai2022-tiny"):
        m = create_model(name, quality=1, pretrained=False)
        assert tuple(getattr(m, "tasks", ())) == model_info(name).tasks
        assert bool(getattr(m, "has_pixel_decoder", True)) == model_info(name).pixel_decoder


def test_a_family_declared_by_its_facts_is_imported_to_build_only():
    from icm.models._spec import declare_model, unregister_model

    with pytest.raises(ValueError, match="module:function"):
        declare_model("toy-lazy", lambda q: None, model_id=122, qualities=(1,))
    declare_model("toy-lazy", "icm.models.hyperprior:hyperprior_tiny", model_id=122, qualities=(1, 2),
                  description="declared by facts only")
    try:
        assert "toy-lazy" in list_models() and codec.model_info_by_id(122).description == "declared by facts only"
        model = create_model("toy-lazy", quality=2, pretrained=False)
        assert (model.model_name, model.quality, model.g_a[0].out_channels) == ("toy-lazy", 2, 8)
    finally:
        unregister_model("toy-lazy")
    assert "toy-lazy" not in list_models()
