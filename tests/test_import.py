"""``import icm`` stays light: heavy optional dependencies load only when needed."""

from __future__ import annotations

import json

import pytest

HEAVY = ["lightning", "pytorch_lightning", "matplotlib", "pillow_heif", "imagecodecs", "imageio_ffmpeg"]

# Run in order in one fresh interpreter (modules only accumulate, so a check after a
# stage also covers every earlier stage); each stage reports what heavy modules are loaded.
STAGES = {
    "import icm": "import icm",
    "import icm.models, icm.codec": "import icm.models, icm.codec",
    "list_models": "icm.models.list_models()",
    "subpackages": "import icm.bitstream, icm.entropy, icm.latent, icm.layers, icm.errors",
    "cli parser": "from icm import cli; cli.build_parser()",
    "create, encode, decode": (
        "import torch; from icm import codec; torch.manual_seed(0); "
        "m = icm.create_model('hyperprior-tiny', quality=1, pretrained=False); "
        "codec.decode(codec.encode(m, torch.rand(1, 3, 16, 16))[0], model=m)"
    ),
}


def _probe_script(stages: dict) -> str:
    lines = ["import json, sys", f"heavy = {HEAVY!r}", "report = {}"]
    for name, stmt in stages.items():
        lines.append(stmt)
        lines.append(f"report[{name!r}] = sorted(m for m in sys.modules if m.split('.')[0] in heavy)")
    lines.append("print(json.dumps(report))")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def import_report():
    import subprocess
    import sys

    from conftest import _subprocess_env

    p = subprocess.run([sys.executable, "-c", _probe_script(STAGES)], capture_output=True, text=True,
                       env=_subprocess_env(), timeout=180)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_keeps_heavy_modules_out(import_report, stage):
    assert import_report[stage] == [], f"after {stage!r}: {import_report[stage]} imported"


def test_probe_detects_a_loaded_module(run_python):
    # the probe itself works: a watched module shows up once something imports it
    script = _probe_script({"fake": "import types; sys.modules['matplotlib.pyplot'] = types.ModuleType('x')"})
    assert json.loads(run_python(script).stdout)["fake"] == ["matplotlib.pyplot"]
