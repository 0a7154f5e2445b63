"""The shipped families' facts, declared without importing their code.

What the registry knows of each shipped model — the id its files carry (and the
ids they carried before a renumbering), its qualities, tasks, whether it has a
pixel decoder, its decode cost model, its description, its training and export
hooks and its contract-test size — is declared here, and its builder is named
as ``"module:function"``.  ``icm models``, ``icm info`` and every refusal
decided from a header read only these facts, so they run without importing
torch; a family's module (``hyperprior.py``, ``bai2022.py``, ``dicm.py``) is
imported when a model is built (:func:`icm.models.create_model`).

A family's own tables (the λ or (α, β) of each quality) stay in its module;
``tests/test_light_cli.py`` checks that they have the qualities declared here
and that every builder named here exists.  A third-party family registers in
its own module with :func:`icm.models.register_model` (or, to stay as light,
:func:`icm.models._spec.declare_model`).
"""

from __future__ import annotations

from ..limits import CostModel
from ._spec import declare_model

_RD = {"train": "icm.train.run:build_rd", "export": "icm.train.export:export_rd"}
_BAI = {"train": "icm.train.bai2022:build", "export": "icm.train.export:export_bai2022"}
_DICM = {"train": "icm.train.dicm:build", "export": "icm.train.export:export_dicm"}

# -- hyperprior.py ---------------------------------------------------------------------------------

declare_model(
    "hyperprior", "icm.models.hyperprior:hyperprior", **_RD,
    model_id=1,
    qualities=(1, 2, 3, 4, 5),  # hyperprior.LAMBDAS
    small={"N": 8, "M": 12},
    # measured 291-312 B, 0.66-0.76 µs at 1-4 Mpx once warm; the time is priced for the first decode of a
    # shape never seen by the process, on the oldest torch allowed (2.5.1, oneDNN 3.5): wide strips
    # cost up to 3.7 µs/px there (1x65536: 15.4 s), held within twice the price plus a second
    cost=CostModel(bytes_per_pixel=320, seconds_per_pixel=2.0e-6, pad_to=64),
    description="Ballé/Minnen mean-scale hyperprior (N=64, M=96), trained on offline photos",
)
declare_model(
    "hyperprior-tiny", "icm.models.hyperprior:hyperprior_tiny", **_RD,
    model_id=2,
    qualities=(1,),
    small={"N": 8, "M": 12},
    cost=CostModel(bytes_per_pixel=320, seconds_per_pixel=2.0e-6, pad_to=64),  # priced as the full model: an upper bound
    description="tiny mean-scale hyperprior (N=8, M=12) for tests and smoke runs; no weights",
)

# -- bai2022.py ------------------------------------------------------------------------------------

declare_model(
    "bai2022", "icm.models.bai2022:bai2022", **_BAI,
    model_id=3,
    qualities=(1, 2, 3, 4),  # bai2022.QUALITIES
    small={"stem": (8, 8, 8), "M": 12, "N": 8, "dim": 24, "depth": 4, "heads": 2, "num_classes": 7},
    cost=CostModel(bytes_per_pixel=1000, seconds_per_pixel=5e-6, token_stride=16, seconds_per_token_pair=2e-7, pad_to=32),
    description="Bai et al. 2022: conv stem + hyperprior + DeiT-S, classifies from the bitstream (224², ImageNet)",
    tasks=("classify",),
)
declare_model(
    "bai2022-fmnist", "icm.models.bai2022:bai2022_fmnist", **_BAI,
    model_id=4,
    qualities=(1, 2, 3, 4, 5, 6, 7, 8, 9),  # bai2022.FMNIST_QUALITIES
    small={"dim": 24, "depth": 4, "heads": 2},
    # measured: 779-504 B/px; 0.14 s at 224², 1.6 s at 448², 7.1 s at 672² (attention over (H/4)(W/4) tokens)
    cost=CostModel(bytes_per_pixel=800, seconds_per_pixel=3e-6, token_stride=4, seconds_per_token_pair=1.6e-8, pad_to=8),
    description="bai2022 at CPU scale for 28x28 greyscale Fashion-MNIST (y at stride 4, ViT 96x4)",
    tasks=("classify",),
)
declare_model(
    "bai2022-tiny", "icm.models.bai2022:bai2022_tiny", **_BAI,
    model_id=5,
    qualities=(1, 2, 3, 4),  # bai2022.QUALITIES
    cost=CostModel(bytes_per_pixel=800, seconds_per_pixel=3e-6, token_stride=16, seconds_per_token_pair=1.6e-8, pad_to=32),
    description="tiny bai2022 (M=12, ViT 16x3) for tests and smoke runs; no weights",
    tasks=("classify",),
)

# -- dicm.py ---------------------------------------------------------------------------------------

declare_model(
    "dicm", "icm.models.dicm:dicm", **_DICM,
    model_id=6,
    qualities=(1, 2, 3, 4),  # dicm.QUALITIES
    small={"re_dims": (16, 16, 16, 16), "dims": (256, 32, 32), "M": 32, "N": 16, "hyper_dim": 32, "hyper_heads": 2,
           "filter_size": (8, 8)},
    cost=CostModel(bytes_per_pixel=700, seconds_per_pixel=2.5e-6, pad_to=64),  # ResNet-50's stages: lite0's, scaled by width
    description="Tang et al. 2025: ResNet-50 split at layer1 + RE + gnConv/hyperprior codec (backbone weights from a file)",
    pixel_decoder=False,
    tasks=("classify",),
)

# Files written before qualities 1 and 2 came first carry model id 8, with
# quality q meaning today's q + 2; those written before the qualities ran from
# the smallest file up carry model id 7, with q meaning today's 7 - q.  Both
# decode with the same weights as then.
LITE0_RETIRED_IDS = {7: {1: 6, 2: 5, 3: 4, 4: 3}, 8: {1: 3, 2: 4, 3: 5, 4: 6}}

declare_model(
    "dicm-lite0", "icm.models.dicm:dicm_lite0", **_DICM,
    model_id=9,
    retired_ids=LITE0_RETIRED_IDS,
    qualities=(1, 2, 3, 4, 5, 6),  # dicm.LITE0_QUALITIES
    small={"re_dims": (16,), "re_depths": (), "dims": (24, 48, 48), "M": 48, "N": 16, "hyper_dim": 32,
           "hyper_heads": 2, "filter_size": (8, 8), "pretrained_backbone": False},
    # one thread, fresh process, 1-4 Mpx (2048x2048, 4096x1024, 64x65536): decode + the
    # classifier 0.87-1.18 µs; detect (the picture head's decoder and all of NanoDet-g on its
    # picture) 2.4-3.1 µs in all; segment (+ a mask per box, up to 100, pasted at the picture's
    # size: ~0.9 kB) 3.8-4.6 µs in all (docs/serving.md)
    cost=CostModel(bytes_per_pixel=280, seconds_per_pixel=1.2e-6, pad_to=16,
                   tasks=(("detect", 64, 2.3e-6), ("segment", 1300, 4.6e-6))),
    description="dicm on EfficientNet-Lite0 (ImageNet weights, cut at 24 ch, stride 4); classifies from the bitstream",
    pixel_decoder=False,
    tasks=("classify",),
)
declare_model(
    "dicm-lite0-s8", "icm.models.dicm:dicm_lite0_s8", **_DICM,
    model_id=10,
    qualities=(1, 2, 3, 4),  # dicm.LITE0_S8_QUALITIES
    small={"re_dims": (16,), "re_depths": (), "dims": (40, 48, 48), "M": 48, "N": 16, "hyper_dim": 32,
           "hyper_heads": 2, "filter_size": (8, 8), "pretrained_backbone": False},
    # one thread, beside two busy one-thread processes on two cores: 0.73 µs/px at 2048x2048 and
    # 1.37 at 64x65536 (decode + classifier); priced with room for the strip shapes
    cost=CostModel(bytes_per_pixel=280, seconds_per_pixel=1.5e-6, pad_to=16),
    description="dicm on EfficientNet-Lite0 cut at its stride-8 stage (40 ch); classifies from the bitstream, "
                "fewer bits than dicm-lite0 for the same agreement; no detection heads",
    pixel_decoder=False,
    tasks=("classify",),
)
# dicm-lite0-s8's network, its qualities 1–3 each trained on from that model's weights at the same λ
# with every batch's crops mixed pairwise (CutMix): other weights, so another id, and
# dicm-lite0-s8's files keep decoding with theirs.
declare_model(
    "dicm-lite0-s8-cutmix", "icm.models.dicm:dicm_lite0_s8_cutmix", **_DICM,
    model_id=11,
    qualities=(1, 2, 3),  # dicm.LITE0_S8_CUTMIX_QUALITIES
    small={"re_dims": (16,), "re_depths": (), "dims": (40, 48, 48), "M": 48, "N": 16, "hyper_dim": 32,
           "hyper_heads": 2, "filter_size": (8, 8), "pretrained_backbone": False},
    cost=CostModel(bytes_per_pixel=280, seconds_per_pixel=1.5e-6, pad_to=16),  # dicm-lite0-s8's network
    description="dicm-lite0-s8's network trained on CutMix composites of the photos: more agreement "
                "on photos it never saw at fewer bits; classifies from the bitstream; no detection heads",
    pixel_decoder=False,
    tasks=("classify",),
)
