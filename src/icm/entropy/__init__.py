"""Entropy models and coding: quantisation, factorized prior, Gaussian conditional.

Knows nothing about models; see :mod:`icm.latent` for codecs built from these.
"""

from .coder import PRECISION, CodingTables, decode, encode
from .factorized import FactorizedPrior
from .gaussian import GaussianConditional
from .quantize import annealed_round, lower_bound, noise_quantize, ste_round

__all__ = [
    "PRECISION",
    "CodingTables",
    "FactorizedPrior",
    "GaussianConditional",
    "annealed_round",
    "decode",
    "encode",
    "lower_bound",
    "noise_quantize",
    "ste_round",
]
