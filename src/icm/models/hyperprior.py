"""Mean-scale hyperprior (Ballé et al., ICLR 2018; Minnen et al., NeurIPS 2018).

The baseline codec for human viewing::

    x ─▶ g_a ─▶ y ─▶ [mean-scale hyperprior: h_a, ẑ, h_s, ŷ] ─▶ g_s ─▶ x̂
    conv5×5/2 + GDN ×3, conv5×5/2        deconv5×5/2 + IGDN ×3, deconv5×5/2

``y`` has ``M`` channels at stride 16, ``z`` has ``N`` channels at stride 64.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..latent import MeanScaleHyperprior
from ..layers import GDN
from ._base import ImageCodec

# λ of the rate–distortion loss  R + λ·255²·MSE  per quality.  The registry's facts (ids, qualities,
# cost, description) are declared in ._facts, which names the builders below.
LAMBDAS = {1: 0.0009, 2: 0.0018, 3: 0.0035, 4: 0.0067, 5: 0.013}


def _conv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=s, padding=k // 2)


def _deconv(cin: int, cout: int, k: int = 5, s: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=s, padding=k // 2, output_padding=s - 1)


class Hyperprior(ImageCodec):
    """Args:
        N: channels of the transforms and of ``z``.
        M: channels of ``y``.
    """

    stride = 64
    refinable = True

    def __init__(self, N: int = 64, M: int = 96) -> None:
        super().__init__()
        self.N, self.M = N, M
        self.g_a = nn.Sequential(
            _conv(3, N), GDN(N), _conv(N, N), GDN(N), _conv(N, N), GDN(N), _conv(N, M)
        )
        self.g_s = nn.Sequential(
            _deconv(M, N), GDN(N, inverse=True), _deconv(N, N), GDN(N, inverse=True),
            _deconv(N, N), GDN(N, inverse=True), _deconv(N, 3),
        )
        h_a = nn.Sequential(
            _conv(M, N, 3, 1), nn.LeakyReLU(inplace=True), _conv(N, N), nn.LeakyReLU(inplace=True), _conv(N, N)
        )
        h_s = nn.Sequential(
            _deconv(N, M), nn.LeakyReLU(inplace=True), _deconv(M, M * 3 // 2), nn.LeakyReLU(inplace=True),
            _conv(M * 3 // 2, M * 2, 3, 1),
        )
        self.latent = MeanScaleHyperprior(h_a, h_s, z_channels=N)

    def analysis(self, x: Tensor) -> Tensor:
        return self.g_a(x)

    def synthesis(self, y_hat: Tensor) -> Tensor:
        return self.g_s(y_hat)


def hyperprior(quality: int, **kwargs) -> Hyperprior:
    model = Hyperprior(**kwargs)
    model.lmbda = LAMBDAS[quality]
    return model


def hyperprior_tiny(quality: int, **kwargs) -> Hyperprior:
    kwargs = {"N": 8, "M": 12, **kwargs}
    model = Hyperprior(**kwargs)
    model.lmbda = LAMBDAS[2]
    return model
