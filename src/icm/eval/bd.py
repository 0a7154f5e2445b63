"""Bjøntegaard deltas through the ``bjontegaard`` package (pchip interpolation)."""

from __future__ import annotations

import warnings

import numpy as np


def _sorted(rate, metric):
    rate, metric = np.asarray(rate, dtype=float), np.asarray(metric, dtype=float)
    order = np.argsort(rate)
    return rate[order], metric[order]


def overlap(metric_ref, metric_test) -> float:
    """Fraction of the reference's metric range that the test curve covers."""
    lo = max(min(metric_ref), min(metric_test))
    hi = min(max(metric_ref), max(metric_test))
    span = max(metric_ref) - min(metric_ref)
    return max(0.0, hi - lo) / span if span > 0 else 0.0


def bd_rate(rate_ref, metric_ref, rate_test, metric_test) -> float:
    """Average rate difference (%) of ``test`` against ``ref`` at equal metric.

    Negative means ``test`` needs fewer bits.  Computed over the overlapping
    metric range; warns when that overlap covers under half of either curve.
    """
    import bjontegaard

    r0, m0 = _sorted(rate_ref, metric_ref)
    r1, m1 = _sorted(rate_test, metric_test)
    if min(overlap(m0, m1), overlap(m1, m0)) < 0.5:
        warnings.warn("BD-rate over a thin overlap of the two curves", stacklevel=2)
    return float(bjontegaard.bd_rate(r0, m0, r1, m1, method="pchip", require_matching_points=False, min_overlap=0.0))


def bd_metric(rate_ref, metric_ref, rate_test, metric_test) -> float:
    """Average metric difference of ``test`` against ``ref`` at equal rate (e.g. ΔPSNR dB)."""
    import bjontegaard

    r0, m0 = _sorted(rate_ref, metric_ref)
    r1, m1 = _sorted(rate_test, metric_test)
    return float(bjontegaard.bd_psnr(r0, m0, r1, m1, method="pchip", require_matching_points=False, min_overlap=0.0))
