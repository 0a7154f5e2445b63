"""Transformer blocks over the positions of a feature map."""

from __future__ import annotations

from functools import partial

from torch import Tensor, nn


class TokenBlocks(nn.Module):
    """timm ViT blocks applied to the positions of a ``(B, C, H, W)`` map."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block

        norm = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm)
                                      for _ in range(depth)))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        t = self.blocks(x.flatten(2).transpose(1, 2))
        return t.transpose(1, 2).reshape(b, c, h, w)
