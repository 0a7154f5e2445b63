"""Small building blocks shared by the model families."""

from .fixed_point import FixedPointNet
from .gdn import GDN

__all__ = ["GDN", "FixedPointNet"]
