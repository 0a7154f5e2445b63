"""The one learning-rate schedule gives every recipe the factors its own formula gave."""

from __future__ import annotations

import math

import pytest
import torch

from icm.errors import IcmError
from icm.train.optim import make_optimizer, warmup_cosine_factor


def _old_bai2022(i, warm, total, floor):
    if i < warm:
        return 1e-3 + (1 - 1e-3) * i / warm
    t = min(1.0, (i - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _old_detection(i, warm, total, floor):
    if i < warm:
        return (i + 1) / warm
    t = min(1.0, (i - warm) / max(total - warm, 1))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _old_dicm(i, total, floor):
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / total)))


@pytest.mark.parametrize("warm,total,floor", [(0, 1, 0.0), (1, 10, 0.1), (5, 40, 0.0), (250, 5000, 0.0025)])
def test_factors_match_each_recipes_formula(warm, total, floor):
    for i in range(0, total + 3):
        if warm:
            assert warmup_cosine_factor(total, floor, warm, 1e-3)(i) == pytest.approx(_old_bai2022(i, warm, total, floor),
                                                                                      abs=1e-12)
            new = warmup_cosine_factor(total, floor, warm, start=1 / warm, reach=warm - 1)(i)
            assert new == pytest.approx(_old_detection(i, warm, total, floor), abs=1e-12)
        assert warmup_cosine_factor(total, floor)(i) == pytest.approx(_old_dicm(i, max(total, 1), floor), abs=1e-12)


def test_make_optimizer():
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("AdamW", p, 1e-3, 0.05), torch.optim.AdamW)
    assert make_optimizer("sgd", p, 0.1, momentum=0.8).param_groups[0]["momentum"] == 0.8
    with pytest.raises(IcmError, match="unknown optimiser 'lion'"):
        make_optimizer("lion", p, 1e-3)
