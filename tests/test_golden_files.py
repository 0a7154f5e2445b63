"""Golden cross-version files: ``.icm`` files made once with the shipped weights
(``tests/golden/``, see ``regenerate.py`` there) decode on whatever PyTorch is
installed to the very same latents, bit for bit, with one or two threads.

Pixels and logits come out of float networks and are *not* bit-exact across
PyTorch versions, thread counts or batch sizes; they are checked against the
reference decode within the tolerances below (docs/design.md, "What is bit-exact").
"""

from __future__ import annotations

import hashlib
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from icm import codec
from icm.entropy._tables import TableModule

GOLDEN = Path(__file__).with_name("golden")
MANIFEST = json.loads((GOLDEN / "manifest.json").read_text())
FILES = sorted(MANIFEST["files"])
_regen = runpy.run_path(str(GOLDEN / "regenerate.py"))

PIXEL_MAX_DIFF = 1  # 8-bit levels
PIXEL_MAX_SHARE = 0.005  # of the values that may differ by that much
LOGIT_MAX_DIFF = 1e-3


def test_every_family_has_two_golden_qualities():
    from icm.models import has_weights, list_models, model_info

    shipped = {n for n in list_models() if any(has_weights(n, q) for q in model_info(n).qualities)}
    by_family = {}
    for e in MANIFEST["files"].values():
        by_family.setdefault(e["model"], set()).add(e["quality"])
    assert set(by_family) == shipped
    assert all(len(q) >= 2 for q in by_family.values())


@pytest.fixture
def no_table_builds(monkeypatch):
    """Shipped models built afresh, with any rebuild of coding tables an error."""
    def refuse(self):
        raise AssertionError(f"{type(self).__name__} rebuilt its coding tables from local float maths")

    monkeypatch.setattr(TableModule, "_build_tables", refuse)
    codec._shipped_model.cache_clear()
    yield
    codec._shipped_model.cache_clear()


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fname", FILES)
def test_golden_latents_are_bit_exact(fname, threads, no_table_builds):
    entry = MANIFEST["files"][fname]
    data = (GOLDEN / fname).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["bytes"]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out = codec.decode(data, pixels=False)
    finally:
        torch.set_num_threads(before)
    assert list(out["y_hat"].shape) == entry["y_hat_shape"]
    assert _regen["sha256_tensor"](out["y_hat"]) == entry["y_hat_sha256"], (
        f"{fname}: decoded latent differs from the one made under torch {MANIFEST['torch']}")
    tables = [m for m in out["model"].modules() if isinstance(m, TableModule)]
    assert tables and not any(m.tables_are_stale() for m in tables)


@pytest.mark.parametrize("fname", [f for f in FILES if "pixels_sha256" in MANIFEST["files"][f]])
def test_golden_pixels_within_one_level(fname):
    ref = np.asarray(Image.open(GOLDEN / _regen["reference_png"](fname))).astype(np.int16)
    got = codec.to_uint8(codec.decode((GOLDEN / fname).read_bytes())["x_hat"]).astype(np.int16)
    assert got.shape == ref.shape
    diff = np.abs(got - ref)
    assert int(diff.max()) <= PIXEL_MAX_DIFF
    assert float((diff > 0).mean()) <= PIXEL_MAX_SHARE


@pytest.mark.parametrize("fname", [f for f in FILES if "logits" in MANIFEST["files"][f]])
def test_golden_logits_within_tolerance(fname):
    ref = torch.tensor(MANIFEST["files"][fname]["logits"])
    got = codec.analyze((GOLDEN / fname).read_bytes(), task="classify")["output"][0].float()
    assert got.shape == ref.shape
    assert float((got - ref).abs().max()) <= LOGIT_MAX_DIFF
    assert got.topk(5).indices.tolist() == ref.topk(5).indices.tolist()


LEGACY = [f for f in FILES if "written_as" in MANIFEST["files"][f]]


@pytest.mark.parametrize("fname", LEGACY)
def test_files_of_a_retired_model_id_still_decode(fname):
    """A file written before its family's qualities were renumbered (another model id)
    reads as today's model and quality and decodes to the very latent of today's
    file made from the same picture."""
    entry = MANIFEST["files"][fname]
    f = codec.read(GOLDEN / fname)
    old = entry["written_as"]
    assert (f.written_as.model_id, f.written_as.quality) == (old["model_id"], old["quality"])
    info = codec.model_info(entry["model"])
    assert (f.header.model_id, f.header.quality) == (info.model_id, entry["quality"]) != (old["model_id"], old["quality"])
    (twin,) = [k for k, e in MANIFEST["files"].items() if "written_as" not in e
               and (e["model"], e["quality"], e["sample"], e["box"]) == (entry["model"], entry["quality"], entry["sample"], entry["box"])]
    assert MANIFEST["files"][twin]["y_hat_sha256"] == entry["y_hat_sha256"]
    assert codec.read(GOLDEN / twin).written_as is None


def test_every_current_golden_file_carries_current_ids():
    for fname in FILES:
        if "written_as" not in MANIFEST["files"][fname]:
            f = codec.read(GOLDEN / fname)
            assert f.written_as is None and f.header.model_id == codec.model_info(MANIFEST["files"][fname]["model"]).model_id
