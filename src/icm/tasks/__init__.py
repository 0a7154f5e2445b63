"""Machine tasks on compressed-domain features, and the data they learn from.

- :mod:`icm.tasks.annotations`: COCO and PASCAL VOC readers that yield
  torchvision detection targets; a COCO JSON writer (COCO polygons need
  pycocotools: the ``eval``/``train``/``detect`` extras).
- :mod:`icm.tasks.rle`: COCO compressed RLE of masks in numpy alone (the core
  install prints ``icm analyze --task segment --json`` masks with it).
- :mod:`icm.tasks.synthetic`: a seeded synthetic multi-object set (shapes on
  textures and photo crops, exact boxes and masks) written in COCO format.
- :mod:`icm.tasks.detection`: Faster / Mask R-CNN (torchvision) on the
  compressed-domain backbone of ``dicm`` — decoded latent → feature decoder →
  backbone tail → FPN → RPN → RoI heads, no resizing, boxes in the coded
  image's pixels — and the same heads on pixels as the reference.
- :mod:`icm.tasks.metrics`: COCO box / mask mAP (torchmetrics, pycocotools).

Submodules are imported on demand so that ``import icm.tasks`` stays light.
"""
