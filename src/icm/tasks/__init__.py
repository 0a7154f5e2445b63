"""Machine tasks on compressed-domain features, and the data they learn from.

- :mod:`icm.tasks.annotations`: COCO and PASCAL VOC readers that yield
  torchvision detection targets; RLE helpers; a COCO JSON writer.
- :mod:`icm.tasks.synthetic`: a seeded synthetic multi-object set (shapes on
  textures and photo crops, exact boxes and masks) written in COCO format.

Submodules are imported on demand so that ``import icm.tasks`` stays light.
"""
