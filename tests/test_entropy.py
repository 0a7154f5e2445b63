"""Entropy coding: the range coder, integer tables, factorized prior, Gaussian conditional."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from icm.entropy import PRECISION, FactorizedPrior, GaussianConditional, coder
from icm.entropy.coder import CodingTables, quantize_pmf


def _gaussian_tables():
    gc = GaussianConditional()
    tables, models = gc.coding_tables()
    return gc, tables, models


# -- coder --------------------------------------------------------------------


def test_coder_round_trip_random_including_escapes():
    gc, tables, models = _gaussian_tables()
    rng = np.random.default_rng(1)
    n = 5000
    idx = rng.integers(0, len(tables), size=n)
    sym = np.round(rng.normal(size=n) * gc.scale_table.numpy()[idx]).astype(np.int64)
    # Values far outside every table: the escape path.
    far = np.array([10**6, -10**6, 2**40, -2**40, 2**31, -2**31 - 7, 123_456_789, -1], dtype=np.int64)
    where = rng.choice(n, size=far.size, replace=False)
    sym[where] = far
    # Some at exactly the edge of their table, and one past it.
    edge = np.array([tables.offsets[idx[0]], tables.offsets[idx[0]] + tables.lengths[idx[0]] - 1,
                     tables.offsets[idx[0]] + tables.lengths[idx[0]]], dtype=np.int64)
    sym[:3] = edge
    idx[:3] = idx[0]
    data = coder.encode(sym, idx, tables, models)
    assert isinstance(data, bytes) and len(data) % 4 == 0
    out = coder.decode(data, idx, tables, models)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, sym)
    # Without cached models too.
    np.testing.assert_array_equal(coder.decode(data, idx, tables), sym)


def test_coder_round_trip_keeps_shape():
    _, tables, models = _gaussian_tables()
    rng = np.random.default_rng(2)
    idx = rng.integers(0, len(tables), size=(3, 4, 5))
    sym = rng.integers(-50, 51, size=(3, 4, 5))
    out = coder.decode(coder.encode(sym, idx, tables, models), idx, tables, models)
    assert out.shape == (3, 4, 5)
    np.testing.assert_array_equal(out, sym)


def test_coder_only_escapes():
    _, tables, models = _gaussian_tables()
    sym = np.array([10**6, -(10**6), 2**40, -(2**40)], dtype=np.int64)
    idx = np.zeros(4, dtype=np.int64)  # scale 0.11: a 3-entry table, all four escape
    out = coder.decode(coder.encode(sym, idx, tables, models), idx, tables, models)
    np.testing.assert_array_equal(out, sym)


def test_coder_escape_int64_extremes():
    # The module promises an exact round trip "for *any* integer input".
    _, tables, models = _gaussian_tables()
    sym = np.array([2**62, -(2**62) - 1, 2**63 - 1, -(2**63)], dtype=np.int64)
    idx = np.zeros(sym.size, dtype=np.int64)
    out = coder.decode(coder.encode(sym, idx, tables, models), idx, tables, models)
    np.testing.assert_array_equal(out, sym)


def test_coder_empty_input():
    _, tables, models = _gaussian_tables()
    empty = np.zeros(0, dtype=np.int64)
    assert coder.encode(empty, empty, tables, models) == b""
    out = coder.decode(b"", empty, tables, models)
    assert out.shape == (0,) and out.dtype == np.int64
    out2 = coder.decode(b"", np.zeros((2, 0, 3), dtype=np.int64), tables, models)
    assert out2.shape == (2, 0, 3)


def test_coder_shape_mismatch_raises():
    _, tables, models = _gaussian_tables()
    with pytest.raises(ValueError, match="table indices"):
        coder.encode(np.zeros(3, np.int64), np.zeros(4, np.int64), tables, models)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_coder_decode_rejects_partial_words(cut):
    _, tables, models = _gaussian_tables()
    idx = np.full(100, 40, dtype=np.int64)
    sym = np.arange(100, dtype=np.int64) % 7 - 3
    data = coder.encode(sym, idx, tables, models)
    assert len(data) >= 4
    with pytest.raises(ValueError, match="32-bit words"):
        coder.decode(data[:-cut], idx, tables, models)
    with pytest.raises(ValueError, match="32-bit words"):
        coder.decode(data + b"\x00" * (4 - cut), idx, tables, models)


def test_coder_decode_of_garbage_raises_value_error():
    # decode() documents ValueError for bytes that encode() did not make with these tables.
    _, tables, models = _gaussian_tables()
    idx = np.full(64, 40, dtype=np.int64)
    with pytest.raises(ValueError):
        coder.decode(b"\xff" * 8, idx, tables, models)


# -- quantize_pmf ---------------------------------------------------------------


@pytest.mark.parametrize(
    "pmf, tail",
    [
        (np.array([0.25, 0.5, 0.25]), 0.0),
        (np.array([1.0]), 0.0),
        (np.array([1e-30, 1.0 - 2e-12, 1e-30]), 1e-12),
        (np.exp(-0.5 * (np.arange(-200, 201) / 40.0) ** 2), 1e-9),
        (np.full(1000, 1e-3), 0.5),
        (np.array([0.3, -0.1, 0.7]), -1.0),  # negative inputs are clipped
    ],
)
def test_quantize_pmf_sums_to_total_and_is_positive(pmf, tail):
    f = quantize_pmf(pmf.astype(np.float64), tail)
    assert f.dtype == np.int64
    assert f.shape == (pmf.shape[0] + 1,)
    assert int(f.sum()) == 1 << PRECISION
    assert int(f.min()) >= 1


def test_quantize_pmf_is_proportional():
    f = quantize_pmf(np.array([0.25, 0.5, 0.25]), 0.0)
    total = 1 << PRECISION
    np.testing.assert_allclose(f[:3] / total, [0.25, 0.5, 0.25], atol=4.0 / total)
    assert f[3] == 1  # no tail mass: the escape keeps only its minimum


def test_quantize_pmf_rejects_overlong_table():
    with pytest.raises(ValueError, match="too long"):
        quantize_pmf(np.full(1 << (PRECISION - 1), 1.0), 0.0)


def test_coding_tables_from_pmfs_layout():
    t = CodingTables.from_pmfs([np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5])], [-1, 4], [0.0, 1e-3])
    assert len(t) == 2
    assert t.freqs.shape == (2, 4) and t.freqs.dtype == np.int32
    assert t.freqs[0, 3] == 0  # padding
    np.testing.assert_array_equal(t.lengths, [2, 3])
    np.testing.assert_array_equal(t.offsets, [-1, 4])
    assert [int(t.freqs[k, : t.lengths[k] + 1].sum()) for k in range(2)] == [1 << PRECISION] * 2


# -- FactorizedPrior ------------------------------------------------------------------


def _prior(channels=4, seed=0):
    torch.manual_seed(seed)
    return FactorizedPrior(channels).eval()


def _z(shape=(2, 4, 5, 7), scale=5.0, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def test_factorized_round_trip_matches_eval_quantisation():
    prior = _prior()
    z = _z()
    z_hat, lik = prior(z)
    assert torch.equal(z_hat, torch.round(z))
    strings = prior.compress(z_hat)
    assert len(strings) == 2 and all(isinstance(s, bytes) for s in strings)
    out = prior.decompress(strings, (5, 7))
    assert out.dtype == torch.float32 and out.shape == z_hat.shape
    assert torch.equal(out, z_hat)
    assert bool(((lik > 0) & (lik <= 1)).all())


def test_factorized_round_trip_with_escapes():
    prior = _prior()
    z = torch.round(_z())
    z[0, 0, 0, 0] = 1e5
    z[1, 3, 4, 6] = -3e6
    z[1, 2, 0, 1] = 2**24
    out = prior.decompress(prior.compress(z), (5, 7))
    assert torch.equal(out, z)


def test_factorized_training_adds_noise():
    prior = _prior().train()
    z = _z()
    z_tilde, lik = prior(z)
    assert not torch.equal(z_tilde, torch.round(z))
    assert not torch.equal(z_tilde, z)
    assert float((z_tilde - z).abs().max()) <= 0.5
    assert bool(((lik > 0) & (lik <= 1)).all())


def test_factorized_likelihood_channel_check():
    prior = _prior(channels=4)
    with pytest.raises(ValueError, match="expected 4 channels"):
        prior.likelihood(torch.zeros(1, 3, 2, 2))


def test_factorized_likelihood_sums_to_one_per_channel():
    prior = _prior(channels=3)
    grid = torch.arange(-300, 301, dtype=torch.float32)
    z = grid.reshape(1, 1, 1, -1).repeat(1, 3, 1, 1)
    with torch.no_grad():
        lik = prior.likelihood(z).double()
    np.testing.assert_allclose(lik.sum(dim=-1).reshape(-1).numpy(), 1.0, atol=1e-4)


# -- GaussianConditional ---------------------------------------------------------------


def test_gaussian_round_trip_random_symbols_and_indexes():
    gc = GaussianConditional()
    g = torch.Generator().manual_seed(5)
    index = torch.randint(0, 64, (3, 6, 4, 5), generator=g)
    scales = gc.scale_table.float()[index]
    sym = torch.round(torch.randn(3, 6, 4, 5, generator=g) * scales * 1.5)
    sym[0, 0, 0, 0] = 10**6
    strings = gc.compress(sym, index)
    assert len(strings) == 3
    out = gc.decompress(strings, index)
    assert out.dtype == torch.float32
    assert torch.equal(out, sym)


def test_gaussian_rejects_bad_scale_table():
    with pytest.raises(ValueError):
        GaussianConditional(scale_min=1.0, scale_max=0.5)
    with pytest.raises(ValueError):
        GaussianConditional(num_scales=1)


@pytest.mark.parametrize("frac_bits", [6, 10, 16])
def test_gaussian_scale_index_is_monotone(frac_bits):
    gc = GaussianConditional()
    scales = torch.exp(torch.linspace(math.log(0.01), math.log(1000.0), 5000, dtype=torch.float64))
    fixed = torch.round(scales * 2**frac_bits)
    idx = gc.scale_index(fixed, frac_bits)
    assert idx.dtype == torch.int64
    assert bool((idx[1:] >= idx[:-1]).all())
    assert int(idx[0]) == 0 and int(idx[-1]) == 63
    assert set(idx.tolist()) == set(range(64))


def test_gaussian_scale_index_of_levels_is_the_level():
    gc = GaussianConditional()
    fixed = torch.round(gc.scale_table * 2**10)
    np.testing.assert_array_equal(gc.scale_index(fixed, 10).numpy(), np.arange(64))


@pytest.mark.parametrize("scale", [0.11, 0.5, 1.0, 3.7, 20.0, 256.0])
def test_gaussian_likelihood_sums_to_one(scale):
    gc = GaussianConditional()
    k = int(math.ceil(12 * scale)) + 3
    values = torch.arange(-k, k + 1, dtype=torch.float64)
    lik = gc.likelihood(values, torch.full_like(values, scale))
    assert bool(((lik > 0) & (lik <= 1)).all())
    assert abs(float(lik.sum()) - 1.0) < 1e-6 + 1e-9 * values.numel()
    # symmetric in the value
    assert torch.allclose(lik, lik.flip(0))


def test_gaussian_likelihood_bounds_scale_below_minimum():
    gc = GaussianConditional()
    v = torch.zeros(1)
    assert torch.equal(gc.likelihood(v, torch.tensor([1e-6])), gc.likelihood(v, torch.tensor([0.11])))


def test_gaussian_coded_size_close_to_ideal():
    gc = GaussianConditional()
    level = 30
    scale = float(gc.scale_table[level])
    g = torch.Generator().manual_seed(11)
    n = 50_000
    # round(N(0, s^2)) follows exactly the Gaussian-convolved-with-a-box pmf the tables model.
    sym = torch.round(torch.randn(1, 1, 1, n, generator=g, dtype=torch.float64) * scale)
    index = torch.full((1, 1, 1, n), level, dtype=torch.int64)
    data = gc.compress(sym, index)[0]
    actual_bits = 8 * len(data)
    ideal_bits = float(-torch.log2(gc.likelihood(sym, torch.full_like(sym, scale))).sum())
    assert ideal_bits > 2.0 * n  # sanity: a few bits per symbol at this scale
    assert abs(actual_bits - ideal_bits) <= 0.01 * ideal_bits, (actual_bits, ideal_bits)
    assert torch.equal(gc.decompress([data], index), sym.float())


# -- tables: stale detection and persistence -------------------------------------------


def test_tables_go_stale_and_rebuild_after_parameter_change():
    prior = _prior()
    z = torch.round(_z())
    before, _ = prior.coding_tables()
    freqs_before = before.freqs.copy()
    offsets_before = before.offsets.copy()
    assert not prior.tables_are_stale()
    bytes_before = prior.compress(z)

    with torch.no_grad():
        prior.biases[0].add_(0.1)
        prior.matrices[1].add_(0.05)
    assert prior.tables_are_stale()
    after, _ = prior.coding_tables()  # no update() call anywhere
    assert not prior.tables_are_stale()
    assert not (np.array_equal(after.freqs, freqs_before) and np.array_equal(after.offsets, offsets_before))

    strings = prior.compress(z)
    assert strings != bytes_before
    assert torch.equal(prior.decompress(strings, (5, 7)), z)


def test_tables_saved_in_state_dict_and_reused():
    prior = _prior(seed=0)
    z = torch.round(_z())
    strings = prior.compress(z)
    sd = prior.state_dict()
    for key in ("_table_freqs", "_table_lengths", "_table_offsets", "_table_stamp"):
        assert key in sd
    assert sd["_table_freqs"].numel() > 0 and sd["_table_freqs"].dtype == torch.int32

    fresh = _prior(seed=123)  # different random biases
    assert fresh._table_freqs.numel() == 0
    fresh.load_state_dict(sd)
    assert torch.equal(fresh._table_freqs, sd["_table_freqs"])
    assert not fresh.tables_are_stale()
    assert fresh.compress(z) == strings
    assert torch.equal(fresh.decompress(strings, (5, 7)), z)


def test_loaded_state_dict_replaces_tables_of_other_shape():
    a = _prior(seed=0)
    a.coding_tables()
    b = _prior(seed=1)
    with torch.no_grad():
        for m in b.matrices:
            m.sub_(1.0)  # a much wider density: wider tables
    b.coding_tables()
    assert b._table_freqs.shape != a._table_freqs.shape
    b.load_state_dict(a.state_dict())
    assert torch.equal(b._table_freqs, a._table_freqs)
    z = torch.round(_z())
    assert b.compress(z) == a.compress(z)


def test_gaussian_tables_in_state_dict():
    a = GaussianConditional()
    a.coding_tables()
    b = GaussianConditional()
    b.load_state_dict(a.state_dict())
    assert not b.tables_are_stale()
    sym = torch.arange(-20, 20, dtype=torch.float32).reshape(1, 1, 1, -1)
    idx = torch.full(sym.shape, 20, dtype=torch.int64)
    assert a.compress(sym, idx) == b.compress(sym, idx)


def test_table_module_deepcopy_after_coding():
    # nn.Modules are routinely deep-copied (EMA weights, model averaging, torch.save(model)).
    prior = _prior()
    z = torch.round(_z())
    strings = prior.compress(z)  # builds tables and caches constriction models
    clone = copy.deepcopy(prior)
    assert clone.compress(z) == strings


# -- tables independent of the PyTorch / NumPy version ---------------------------------


def _digest_floats(values) -> str:
    import hashlib
    import struct

    return hashlib.sha256(b"".join(struct.pack("<d", v) for v in values)).hexdigest()


def test_scale_levels_and_boundaries_are_fixed_constants():
    """The default table's levels and fixed-point boundaries are pinned bit for bit:
    they come from decimal arithmetic, so no PyTorch or NumPy release can move them."""
    import hashlib

    from icm.entropy.gaussian import level_thresholds, scale_levels

    levels = scale_levels(0.11, 256.0, 64)
    assert levels[0] == 0.11 and levels[-1] == 256.0 and len(levels) == 64
    assert _digest_floats(levels) == "31eee1f650c966ed5c3651c60d6f4f857b634037e1c57cad51f485ed05664a6b"
    thr = level_thresholds(levels, 10)
    assert thr[:3] == [120, 135, 153] and thr == sorted(thr)
    assert hashlib.sha256(str(thr).encode()).hexdigest() == \
        "e3421cb9377110537a2b02756ae2e557a324882d713c406340c143889d994f22"
    gc = GaussianConditional()
    assert gc.scale_thresholds(10).tolist() == thr
    assert gc.scale_table.tolist() == levels


def test_gaussian_tables_do_not_use_torch_float_maths(monkeypatch):
    """Perturb torch's exp / erfc / ndtri / linspace in the last bit: the levels, the
    integer tables and their stamp stay exactly the same."""
    import hashlib

    def nudged(fn):
        def f(*a, **k):
            out = fn(*a, **k)
            return torch.nextafter(out, torch.full_like(out, float("inf"))) if out.is_floating_point() else out
        return f

    clean = GaussianConditional()
    clean.coding_tables()
    for name in ("exp", "erfc", "linspace"):
        monkeypatch.setattr(torch, name, nudged(getattr(torch, name)))
    monkeypatch.setattr(torch.special, "ndtri", nudged(torch.special.ndtri))
    perturbed = GaussianConditional()
    perturbed.coding_tables()
    assert perturbed.scale_table.tolist() == clean.scale_table.tolist()
    assert torch.equal(perturbed._table_freqs, clean._table_freqs)
    assert int(perturbed._table_stamp) == int(clean._table_stamp)
    freqs = perturbed._table_freqs.numpy().astype("<i4").tobytes()
    assert hashlib.sha256(freqs).hexdigest() == "ebee2e9b2638da3198fe5e9489726d9ffefcb472758d5753f2b6fabc85f255e3"


def test_stamp_covers_the_stored_integers():
    """An altered integer in a stored table makes the set stale (and it is rebuilt);
    re-stamping refuses tables that a fresh build does not reproduce."""
    gc = GaussianConditional()
    gc.coding_tables()
    good = gc._table_freqs.clone()
    assert not gc.tables_are_stale() and gc.restamp() is False
    gc._table_freqs[5] += 1
    assert gc.tables_are_stale()
    with pytest.raises(ValueError, match="differs from the stored tables"):
        gc.restamp()
    gc.coding_tables()
    assert torch.equal(gc._table_freqs, good) and not gc.tables_are_stale()
