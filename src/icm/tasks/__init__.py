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

from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisTask:
    """One analysis task, declared once: its name, what it answers, how it is measured."""

    name: str
    answers: str  # the JSON key of `icm analyze --json` (and of the service's answer)
    metric: str  # the held-out figure `icm eval` reports for it
    masks: bool = False  # instance masks (COCO RLE) in its answer
    detector: bool = False  # runs the detection heads (icm.tasks.detection), not the classifier


ANALYSIS_TASKS: dict[str, AnalysisTask] = {t.name: t for t in (
    AnalysisTask("classify", "topK", "top-1 accuracy / agreement"),
    AnalysisTask("detect", "detections", "box mAP", detector=True),
    AnalysisTask("segment", "detections", "mask mAP", masks=True, detector=True),
)}
TASK_NAMES = tuple(ANALYSIS_TASKS)
"""Every analysis task, in the order the CLI lists them."""
DETECTION_TASKS = tuple(n for n, t in ANALYSIS_TASKS.items() if t.detector)
"""The tasks the detection heads run (``detect``, ``segment``)."""
REPORT_SCORE = 0.35
"""The lowest score of a detection that ``icm analyze``, the service and the demo report by
default: the shipped heads' teacher's own threshold (its scores are IoU-aware quality
scores, lower than a classifier's probabilities; ``icm eval`` scores every detection)."""

