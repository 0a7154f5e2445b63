"""The fuzzer finds a planted bug within CI's time per target (``.ci/run``: 15 s).

A scratch copy of the library, with one check of the ``.icm`` parser deleted, goes first
on ``PYTHONPATH``; ``python -m icm.fuzz bitstream --seconds 15`` must report a finding,
and the real parser (this process's) must refuse the input it kept.  The library itself
is never weakened.  Slow (a fuzz run each): CI runs it after its bounded fuzz run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import icm
from icm import bitstream
from icm.fuzz import check

pytest.importorskip("atheris")

CI_SECONDS = 15
CHECKS = {
    "image-size": ('    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:\n'
                   '        raise BitstreamError(f"implausible image size {height}x{width} in .icm header")\n'),
    "section-lengths": ('    if sum(lengths) > remaining:\n'
                        '        raise BitstreamError(f"section lengths ({sum(lengths)} bytes) run past the end of the '
                        'file ({remaining} bytes left)")\n'),
}


def planted_copy(root: Path, check_source: str) -> Path:
    """``root/src``: icm with ``check_source`` deleted from ``icm/bitstream.py`` (weights linked)."""
    src = Path(icm.__file__).resolve().parent
    dst = root / "src" / "icm"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "weights"))
    (dst / "weights").symlink_to(src / "weights", target_is_directory=True)
    text = (dst / "bitstream.py").read_text()
    assert check_source in text, "the planted check is no longer in icm/bitstream.py: update CHECKS"
    (dst / "bitstream.py").write_text(text.replace(check_source, ""))
    return root / "src"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_the_fuzzer_finds_a_deleted_parser_check_within_ci_time(name, tmp_path):
    path = planted_copy(tmp_path, CHECKS[name])
    env = {**os.environ, "PYTHONPATH": str(path), "OMP_NUM_THREADS": "1"}
    corpus = tmp_path / "corpus"
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "icm.fuzz", "bitstream", "--seconds", str(CI_SECONDS), "--corpus",
                        str(corpus)], check=False, env=env, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    log = r.stdout + r.stderr
    assert r.returncode == 1 and "FINDING" in log, log[-3000:]
    found = sorted(corpus.glob("bitstream-crash-*"))
    assert found, log[-3000:]
    runs = re.search(r"bitstream: (\d+) inputs in (\d+) s", log)
    print(f"planted {name}: found after {runs.group(1) if runs else '?'} inputs, {took:.1f} s of wall time "
          f"(start-up included)")
    data = found[0].read_bytes()
    check("bitstream", data)  # the real parser: an answer or IcmError, nothing else
    with pytest.raises(bitstream.BitstreamError):
        bitstream.unpack(data)
