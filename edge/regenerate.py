"""Regenerate what icm-edge carries from icm: the senders of the shipped weights
(``icm export-onnx --all``) and the modules it shares with icm, copied verbatim.

Run from the repository root in a Python with ``icm[onnx]`` installed::

    python edge/regenerate.py

tests/test_edge.py checks that the copies are verbatim and that regenerating the
senders gives the same graphs' outputs and the same integers.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "edge" / "src" / "icm_edge"
MODELS = PACKAGE / "models"

SHARED = {  # icm_edge module <- icm module (import only numpy, Pillow, constriction and each other)
    "errors.py": "errors.py",
    "bitstream.py": "bitstream.py",
    "files.py": "files.py",
    "client.py": "client.py",
    "images.py": "images.py",
    "coder.py": "entropy/coder.py",
    "fixed_point.py": "layers/fixed_point_numpy.py",
    "global_filter.py": "layers/global_filter_numpy.py",
}


def copy_shared() -> None:
    for mine, theirs in SHARED.items():
        shutil.copyfile(ROOT / "src" / "icm" / theirs, PACKAGE / mine)


def export_senders() -> None:
    from icm.export_onnx import export_all

    for old in MODELS.glob("*"):
        old.unlink()
    export_all(MODELS, progress=lambda name, q: print(f"{name} q{q}"))


if __name__ == "__main__":
    copy_shared()
    export_senders()
    size = sum(p.stat().st_size for p in MODELS.iterdir())
    print(f"{MODELS}: {len(list(MODELS.iterdir()))} files, {size / 1e6:.1f} MB", file=sys.stderr)
