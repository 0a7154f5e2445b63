"""Latent codecs: entropy models composed into ``forward`` / ``compress`` / ``decompress``."""

from .hyperprior import LatentStrings, MeanScaleHyperprior

__all__ = ["LatentStrings", "MeanScaleHyperprior"]
