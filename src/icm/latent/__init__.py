"""Latent codecs: entropy models composed into ``forward`` / ``compress`` / ``decompress``."""

from .factorized import FactorizedLatent
from .hyperprior import LatentStrings, MeanScaleHyperprior

__all__ = ["FactorizedLatent", "LatentStrings", "MeanScaleHyperprior"]
