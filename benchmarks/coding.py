#!/usr/bin/env python
"""Coding overhead and speed of the shipped ``hyperprior`` codec, beside JPEG and HEVC.

One run, one machine, the same bundled sample photos for every codec:

1. **Coding overhead** – real coded bytes against the model's own estimate.
   *Ideal* is ``sum(-log2 p) / 8`` over the eval-mode ``model(x)["likelihoods"]``
   (``y`` and ``z``; eval mode uses exactly the symbols and fixed-point means
   that are coded, with the scales *before* the scale-table snap).  *Payload*
   is the sum of the coded sections (``model.compress(x).num_bytes()``),
   *file* the whole ``.icm`` file (``len(icm.codec.encode(model, x)[0])``:
   header, section lengths and CRC included).
2. **Timing** – median of ``--repeats`` runs after one discarded warm-up run:
   ``icm.codec.encode`` end to end, ``icm.codec.decode(data, model=model)``
   with pixels, and the shares of those spent in the range coder
   (``icm.entropy.coder.encode`` / ``decode``, wrapped with a timer) and in the
   fixed-point hyper-synthesis (``FixedPointNet.__call__``).
3. **Classical anchors**, timed the same way on the same images: Pillow JPEG
   4:2:0 at quality 75 and at the quality whose file is as large as ours or
   just smaller (``icm.demo.jpeg_at_size``), and HEVC 4:4:4 through
   pillow-heif / libheif / x265 at a fixed QP with psycho-visual tools off.

Prints a Markdown report (and writes it to ``--out``).  Rows are per quality;
every number in a row is the median across the images of the per-image value.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/coding.py                # shipped weights
    OMP_NUM_THREADS=1 python benchmarks/coding.py --random --repeats 2   # no weights yet
"""

from __future__ import annotations

import argparse
import datetime
import functools
import io
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

import icm
from icm import codec
from icm.demo import jpeg_at_size, jpeg_bytes
from icm.metrics import psnr
from icm.samples import sample_paths
from icm.losses import bits as likelihood_bits
from icm.models import create_model, has_weights, model_info

# ---------------------------------------------------------------------------
# Probes: timers around the range coder and the fixed-point hyper-synthesis.
# ---------------------------------------------------------------------------

ACC: dict[str, float] = defaultdict(float)
"""Seconds spent inside each probed function since the last reset."""
CALLS: dict[str, int] = defaultdict(int)


def _timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            ACC[name] += time.perf_counter() - t0
            CALLS[name] += 1

    wrapper.__wrapped_for_benchmark__ = True
    return wrapper


def install_probes() -> list[str]:
    """Wrap the range coder and FixedPointNet; returns notes on what was patched.

    ``icm.entropy.factorized`` and ``icm.entropy.gaussian`` do ``from . import
    coder`` and call ``coder.encode`` / ``coder.decode`` through the module, so
    patching the attributes of ``icm.entropy.coder`` covers them.  Any module
    that instead holds its own reference to the functions (``icm.entropy``
    re-exports them) is patched too, so no call escapes the timer.
    ``FixedPointNet`` is a class used by name in ``icm.latent.hyperprior``;
    patching ``FixedPointNet.__call__`` on the class covers every instance.
    """
    import icm.entropy
    import icm.entropy.coder as coder_mod
    import icm.entropy.factorized as fac_mod
    import icm.entropy.gaussian as gau_mod
    import icm.latent.hyperprior as latent_mod
    from icm.layers.fixed_point import FixedPointNet

    notes = []
    orig = {"encode": coder_mod.encode, "decode": coder_mod.decode}
    wrapped = {k: _timed(f"coder.{k}", f) for k, f in orig.items()}
    for k, w in wrapped.items():
        setattr(coder_mod, k, w)
    for mod in (icm.entropy, fac_mod, gau_mod, latent_mod):
        for k in orig:
            if getattr(mod, k, None) is orig[k]:
                setattr(mod, k, wrapped[k])
                notes.append(f"patched direct reference {mod.__name__}.{k}")
    for mod in (fac_mod, gau_mod):
        if getattr(mod, "coder", None) is not coder_mod:
            notes.append(f"WARNING: {mod.__name__} does not reach the coder as `coder.*`; its calls may be untimed")
    FixedPointNet.__call__ = _timed("fixed_point.call", FixedPointNet.__call__)
    FixedPointNet.__init__ = _timed("fixed_point.init", FixedPointNet.__init__)
    return notes


def reset_probes() -> None:
    ACC.clear()
    CALLS.clear()


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------


def bench(fn, repeats: int) -> dict:
    """Run ``fn`` once (warm-up, discarded), then ``repeats`` times.

    Returns the median wall time (s), the median of each probe's per-run share
    of the wall time, the median seconds per probe, and the last result.
    """
    fn()
    times, shares, secs = [], defaultdict(list), defaultdict(list)
    result = None
    for _ in range(repeats):
        reset_probes()
        t0 = time.perf_counter()
        result = fn()
        dt = time.perf_counter() - t0
        times.append(dt)
        for k in ("coder.encode", "coder.decode", "fixed_point.call", "fixed_point.init"):
            secs[k].append(ACC.get(k, 0.0))
            shares[k].append(ACC.get(k, 0.0) / dt)
    return {
        "time": statistics.median(times),
        "share": {k: statistics.median(v) for k, v in shares.items()},
        "secs": {k: statistics.median(v) for k, v in secs.items()},
        "calls": dict(CALLS),
        "result": result,
    }


# ---------------------------------------------------------------------------
# Classical anchors
# ---------------------------------------------------------------------------


def _pil_decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _jpeg_encode(img: np.ndarray, quality: int) -> bytes:
    return jpeg_bytes(img, quality, subsampling=2)


class Hevc:
    """HEVC 4:4:4 still images through pillow-heif (libheif + x265), fair settings.

    Wanted: ``chroma=444``, ``tune=psnr``, adaptive quantisation and
    psycho-visual RD/RDOQ off, constant QP.  Options the installed encoder
    refuses are dropped one by one and listed in :attr:`notes`.
    """

    def __init__(self, qp: int, threads: int) -> None:
        self.notes: list[str] = []
        self.available = False
        try:
            import pillow_heif
        except ImportError as e:  # pragma: no cover - reported, not fatal
            self.notes.append(f"pillow-heif not importable ({e}); HEVC columns left empty")
            return
        self.pillow_heif = pillow_heif
        pillow_heif.register_heif_opener()
        pillow_heif.options.DECODE_THREADS = threads
        info = pillow_heif.libheif_info()
        self.version = f"pillow-heif {pillow_heif.__version__}, libheif {info.get('libheif')}, " \
                       f"encoder {info.get('HEIF') or '?'}, decoder {info.get('decoders', {}).get('libde265', '?')}"
        if not info.get("HEIF"):
            self.notes.append("libheif has no HEVC encoder; HEVC columns left empty")
            return
        self.qp = qp
        self.chroma = 444
        self.params = {
            "tune": "psnr",
            "x265:aq-mode": "0",
            "x265:psy-rd": "0",
            "x265:psy-rdoq": "0",
            "x265:qp": str(qp),
            # x265 threading: one worker pool of `threads` threads, one frame thread.
            "x265:pools": str(threads),
            "x265:frame-threads": "1",
        }
        self.available = True

    def _save(self, img, chroma, params) -> bytes:
        buf = io.BytesIO()
        # `quality` is ignored once x265:qp selects constant-QP rate control
        # (checked: the same bytes for quality 50 and 90); give it anyway so the
        # default quality is not mistaken for lossless (-1).
        img.save(buf, format="HEIF", quality=50, chroma=chroma, enc_params=dict(params))
        return buf.getvalue()

    def settle(self, img_array: np.ndarray) -> None:
        """Find the accepted subset of the wanted settings on one image."""
        from PIL import Image

        img = Image.fromarray(img_array)
        try:
            self._save(img, self.chroma, self.params)
            return
        except Exception as e:  # noqa: BLE001 - report whatever libheif says
            self.notes.append(f"HEVC with all settings failed ({e}); dropping the ones refused")
        for key in list(self.params):
            try:
                self._save(img, self.chroma, {key: self.params[key]})
            except Exception as e:  # noqa: BLE001
                self.notes.append(f"HEVC option {key}={self.params[key]} not accepted ({e}); dropped")
                del self.params[key]
        try:
            self._save(img, self.chroma, self.params)
        except Exception as e:  # noqa: BLE001
            self.notes.append(f"HEVC chroma=444 not accepted ({e}); falling back to the default (4:2:0)")
            self.chroma = None
            try:
                self._save(img, self.chroma, self.params)
            except Exception as e2:  # noqa: BLE001
                self.notes.append(f"HEVC encoding failed altogether ({e2}); HEVC columns left empty")
                self.available = False

    def encoder(self, img_array: np.ndarray):
        from PIL import Image

        return lambda: self._save(Image.fromarray(img_array), self.chroma, self.params)

    def coded_chroma(self, data: bytes) -> str:
        try:
            return str(self.pillow_heif.open_heif(io.BytesIO(data)).info.get("chroma", "?"))
        except Exception:  # noqa: BLE001
            return "?"


# ---------------------------------------------------------------------------
# Report helpers
# ---------------------------------------------------------------------------


def cpu_name() -> str:
    name = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    return f"{name} ({model})" if name and name != model else model
    except OSError:
        pass
    return name or platform.machine()


def med(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.median(values) if values else float("nan")


def fmt(v: float, spec: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def count_escapes(model, x: torch.Tensor) -> tuple[int, int]:
    """Symbols of ``y`` and ``z`` that fall outside their coding tables (coded by escape).

    Uses the latent codec's internals (``_exact_params``); returns ``(-1, -1)``
    if they are not there.
    """
    try:
        lat = model.latent
        with torch.no_grad():
            y = model.analysis(model.pad(x))
            z_int = torch.round(lat.h_a(y))
            means, _, index = lat._exact_params(z_int)
            sym = torch.round(y - means).to(torch.int64).numpy()
        counts = []
        for symbols, idx, tables in (
            (sym, index.to(torch.int64).numpy(), lat.y_conditional.coding_tables()[0]),
            (z_int.to(torch.int64).numpy(),
             np.broadcast_to(np.arange(z_int.shape[1])[None, :, None, None], z_int.shape),
             lat.z_prior.coding_tables()[0]),
        ):
            v = symbols - tables.offsets[idx]
            counts.append(int(((v < 0) | (v >= tables.lengths[idx])).sum()))
        return counts[0], counts[1]
    except Exception:  # noqa: BLE001 - a diagnostic only
        return -1, -1


def overhead(actual_bytes: int, ideal_bits: float) -> float:
    """Percent by which ``actual_bytes`` exceeds ``ideal_bits / 8`` (NaN below one ideal byte)."""
    return 100 * (actual_bytes / (ideal_bits / 8) - 1) if ideal_bits >= 8 else float("nan")


def _mse_from_psnr(p: float) -> float:
    """MSE on the [0, 1] scale of an 8-bit PSNR."""
    return 10 ** (-p / 10)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hyperprior", help="registry name (default: hyperprior)")
    p.add_argument("--qualities", type=int, nargs="+", help="qualities to run (default: every one with shipped weights)")
    p.add_argument("--random", action="store_true",
                   help="random weights (pretrained=False, torch.manual_seed(0)) instead of the shipped ones; "
                        "used automatically when no shipped weights exist")
    p.add_argument("--threads", type=int, default=1, help="torch / x265 / libheif threads (default: 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per measurement after one warm-up run (default: 5)")
    p.add_argument("--hevc-qp", type=int, default=32, help="x265 constant QP for the HEVC anchor (default: 32)")
    p.add_argument("--jpeg-quality", type=int, default=75, help="fixed JPEG quality anchor (default: 75)")
    p.add_argument("--images", nargs="+", type=Path, help="image files (default: the bundled samples)")
    p.add_argument("--out", type=Path, help="also write the Markdown report here")
    p.add_argument("--refine", type=int, default=0, metavar="N",
                   help="also time encoding with N steps of encoder-side refinement (one run per image; default 0: skip)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    if args.threads < 1:
        p.error("--threads must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    notes: list[str] = []
    if os.environ.get("OMP_NUM_THREADS") != str(args.threads):
        notes.append(f"OMP_NUM_THREADS is {os.environ.get('OMP_NUM_THREADS')!r}, not {args.threads}; "
                     f"torch.set_num_threads({args.threads}) was called anyway")

    info = model_info(args.model)
    shipped = [q for q in info.qualities if has_weights(args.model, q)]
    random_weights = args.random
    if not random_weights and not shipped:
        random_weights = True
        notes.append(f"no shipped weights for {args.model}: fell back to --random (untrained weights)")
        print(f"coding.py: no shipped weights for {args.model}; using random weights (--random)", file=sys.stderr)
    if random_weights:
        qualities = list(args.qualities or info.qualities)
    else:
        qualities = list(args.qualities or shipped)
        missing = [q for q in qualities if q not in shipped]
        if missing:
            print(f"coding.py: no shipped {args.model} weights at qualities {missing} (shipped: {shipped})", file=sys.stderr)
            return 2
    bad = [q for q in qualities if q not in info.qualities]
    if bad:
        print(f"coding.py: {args.model} has no qualities {bad} (valid: {list(info.qualities)})", file=sys.stderr)
        return 2

    notes += install_probes()
    paths = list(args.images or sample_paths())
    images = [(p.stem, codec.load_image(p)) for p in paths]
    hevc = Hevc(args.hevc_qp, args.threads)
    if hevc.available:
        hevc.settle(codec.to_uint8(images[0][1]))
    notes += hevc.notes

    t_start = time.perf_counter()
    cpu_start = time.process_time()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None

    # -- classical anchors that do not depend on our quality --------------------
    anchors = {}
    for name, x in images:
        ref = codec.to_uint8(x)
        a = {"pixels": ref.shape[0] * ref.shape[1]}
        enc = bench(lambda: _jpeg_encode(ref, args.jpeg_quality), args.repeats)
        data = enc["result"]
        dec = bench(lambda: _pil_decode(data), args.repeats)
        a["jpeg"] = {"enc": enc["time"], "dec": dec["time"], "bytes": len(data), "psnr": psnr(ref, dec["result"])}
        if hevc.available:
            enc = bench(hevc.encoder(ref), args.repeats)
            data = enc["result"]
            dec = bench(lambda: _pil_decode(data), args.repeats)
            a["hevc"] = {"enc": enc["time"], "dec": dec["time"], "bytes": len(data), "psnr": psnr(ref, dec["result"]),
                         "chroma": hevc.coded_chroma(data)}
        anchors[name] = a
    if hevc.available:
        chromas = sorted({a["hevc"]["chroma"] for a in anchors.values()})
        if chromas != ["444"]:
            notes.append(f"HEVC files report chroma {chromas}, not 444")

    # -- ours, per quality ---------------------------------------------------------
    per_q: dict[int, list[dict]] = {}
    fired = defaultdict(int)
    for q in qualities:
        if random_weights:
            torch.manual_seed(0)
        model = create_model(args.model, quality=q, pretrained=not random_weights).eval()
        rows = []
        for name, x in images:
            ref = codec.to_uint8(x)
            npix = anchors[name]["pixels"]
            r = {"image": name}
            with torch.no_grad():
                out = model(x)
            lik = out["likelihoods"]
            r["ideal_bits"] = float(likelihood_bits(lik))
            r["ideal_y_bits"] = float(likelihood_bits({"y": lik["y"]}))
            r["ideal_z_bits"] = float(likelihood_bits({"z": lik["z"]}))
            comp = model.compress(x)
            r["payload"] = comp.num_bytes()
            r["y_bytes"], r["z_bytes"] = (len(s) for s in comp.strings[0])

            enc = bench(lambda: codec.encode(model, x), args.repeats)
            data = enc["result"][0]
            r["file"] = len(data)
            r["enc"] = enc["time"]
            r["enc_ec"] = enc["share"]["coder.encode"] + enc["share"]["coder.decode"]
            r["enc_fp"] = enc["share"]["fixed_point.call"]
            r["enc_fp_init_ms"] = 1e3 * enc["secs"]["fixed_point.init"]
            dec = bench(lambda: codec.decode(data, model=model), args.repeats)
            r["dec"] = dec["time"]
            r["dec_ec"] = dec["share"]["coder.encode"] + dec["share"]["coder.decode"]
            r["dec_fp"] = dec["share"]["fixed_point.call"]
            r["dec_fp_init_ms"] = 1e3 * dec["secs"]["fixed_point.init"]
            for k, v in (*enc["calls"].items(), *dec["calls"].items()):
                fired[k] += v
            rec = codec.to_uint8(dec["result"]["x_hat"])
            r["psnr"] = psnr(ref, rec)
            r["exact"] = bool(torch.equal(dec["result"]["y_hat"], out["y_hat"]))

            # JPEG matched in size to our whole file
            jq, jdata = jpeg_at_size(ref, r["file"])
            jenc = bench(lambda: _jpeg_encode(ref, jq), args.repeats)
            jdec = bench(lambda: _pil_decode(jdata), args.repeats)
            r["jm"] = {"q": jq, "enc": jenc["time"], "dec": jdec["time"], "bytes": len(jdata),
                       "psnr": psnr(ref, jdec["result"])}
            a = anchors[name]
            r["bpp"] = 8 * r["file"] / npix
            r["ideal_bpp"] = r["ideal_bits"] / npix
            r["ovh_payload"] = overhead(r["payload"], r["ideal_bits"])
            r["ovh_file"] = overhead(r["file"], r["ideal_bits"])
            r["ovh_y"] = overhead(r["y_bytes"], r["ideal_y_bits"])
            r["ovh_z"] = overhead(r["z_bytes"], r["ideal_z_bits"])
            r["esc_y"], r["esc_z"] = count_escapes(model, x)
            r["n_y"], r["n_z"] = lik["y"].numel(), lik["z"].numel()
            r["r_enc_jm"] = r["enc"] / r["jm"]["enc"]
            r["r_dec_jm"] = r["dec"] / r["jm"]["dec"]
            r["r_enc_j"] = r["enc"] / a["jpeg"]["enc"]
            r["r_dec_j"] = r["dec"] / a["jpeg"]["dec"]
            if "hevc" in a:
                r["r_enc_h"] = r["enc"] / a["hevc"]["enc"]
                r["r_dec_h"] = r["dec"] / a["hevc"]["dec"]
            if args.refine:
                # One timed run: a refined encode takes seconds, not milliseconds.
                t0 = time.perf_counter()
                rdata = codec.encode(model, x, refine=args.refine)[0]
                r["ref_enc"] = time.perf_counter() - t0
                r["ref_bpp"] = 8 * len(rdata) / npix
                r["ref_psnr"] = psnr(ref, codec.to_uint8(codec.decode(rdata, model=model)["x_hat"]))
                r["ref_cost_ratio"] = (r["ref_bpp"] + model.lmbda * 255**2 * _mse_from_psnr(r["ref_psnr"])) / (
                    r["bpp"] + model.lmbda * 255**2 * _mse_from_psnr(r["psnr"]))
            rows.append(r)
        per_q[q] = rows
    elapsed = time.perf_counter() - t_start
    cpu_ratio = (time.process_time() - cpu_start) / elapsed
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None

    for k in ("coder.encode", "coder.decode", "fixed_point.call"):
        if not fired.get(k):
            notes.append(f"WARNING: probe {k} never fired; its share reads 0 but is not measured")
    if not all(r["exact"] for rows in per_q.values() for r in rows):
        notes.append("WARNING: decoded y_hat differs from eval-mode model(x)['y_hat'] on some images")

    # -- report -----------------------------------------------------------------
    import PIL

    from importlib.metadata import PackageNotFoundError, version

    try:
        cver = version("constriction")
    except PackageNotFoundError:
        cver = "?"
    lines = [
        f"# icm coding benchmark: {args.model}" + (" — RANDOM WEIGHTS (not representative)" if random_weights else ""),
        "",
        f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}",
        f"- machine: {cpu_name()}; {platform.platform()}; {os.cpu_count()} logical CPUs",
        f"- torch {torch.__version__}, torch.get_num_threads() = {torch.get_num_threads()}, "
        f"Python {platform.python_version()}, icm {icm.__version__}, constriction {cver}, Pillow {PIL.__version__}",
        f"- HEVC: {getattr(hevc, 'version', 'unavailable')}; settings: chroma={getattr(hevc, 'chroma', '–')}, "
        f"{', '.join(f'{k}={v}' for k, v in getattr(hevc, 'params', {}).items()) or '–'}",
        f"- images: {len(images)} ({', '.join(f'{n} {tuple(x.shape[-2:])}' for n, x in images)}); "
        f"weights: {'random (torch.manual_seed(0), pretrained=False)' if random_weights else 'shipped'}; qualities {qualities}",
        f"- timing: median of {args.repeats} runs after 1 discarded warm-up, time.perf_counter; "
        f"every row entry is the median across images of the per-image value",
        f"- load average (1/5/15 min) at start {tuple(round(v, 2) for v in load_start) if load_start else '?'}, "
        f"at end {tuple(round(v, 2) for v in load_end) if load_end else '?'}; benchmark took {elapsed:.0f} s wall, "
        f"process CPU / wall = {cpu_ratio:.2f} (well below {args.threads} means the CPU was shared and times are inflated)",
        "",
    ]

    hdr = ["q", "bpp (file)", "ideal bpp", "overhead payload %", "overhead file %", "enc ms", "dec ms",
           "EC share enc/dec %", "FP share enc/dec %", f"JPEG q{args.jpeg_quality} enc/dec ms",
           "JPEG≈size enc/dec ms", "HEVC enc/dec ms", "ours/JPEG≈size enc/dec", "ours/HEVC enc/dec"]
    table = []
    for q, rows in per_q.items():
        m = lambda k: med(r[k] for r in rows)  # noqa: E731
        ja = [anchors[r["image"]]["jpeg"] for r in rows]
        ha = [anchors[r["image"]].get("hevc") for r in rows]
        table.append([
            str(q), fmt(m("bpp"), ".3f"), fmt(m("ideal_bpp"), ".3f"), fmt(m("ovh_payload"), "+.2f"),
            fmt(m("ovh_file"), "+.2f"), fmt(1e3 * m("enc"), ".1f"), fmt(1e3 * m("dec"), ".1f"),
            f"{fmt(100 * m('enc_ec'), '.1f')} / {fmt(100 * m('dec_ec'), '.1f')}",
            f"{fmt(100 * m('enc_fp'), '.1f')} / {fmt(100 * m('dec_fp'), '.1f')}",
            f"{fmt(1e3 * med(a['enc'] for a in ja), '.2f')} / {fmt(1e3 * med(a['dec'] for a in ja), '.2f')}",
            f"{fmt(1e3 * med(r['jm']['enc'] for r in rows), '.2f')} / {fmt(1e3 * med(r['jm']['dec'] for r in rows), '.2f')}",
            f"{fmt(1e3 * med(a['enc'] for a in ha if a), '.1f')} / {fmt(1e3 * med(a['dec'] for a in ha if a), '.1f')}",
            f"{fmt(m('r_enc_jm'), '.1f')}× / {fmt(m('r_dec_jm'), '.1f')}×",
            f"{fmt(med(r.get('r_enc_h') for r in rows), '.2f')}× / {fmt(med(r.get('r_dec_h') for r in rows), '.2f')}×",
        ])
    lines += ["## Summary (median across images)", "", markdown_table(hdr, table), ""]
    lines += [
        "EC = range coder (`icm.entropy.coder.encode`/`decode`); FP = fixed-point hyper-synthesis "
        "(`FixedPointNet.__call__`), both as a share of the end-to-end encode / decode time.  "
        "Overhead = actual bytes / (ideal bits / 8) − 1, ideal from the eval-mode likelihoods of y and z.  "
        f"JPEG is Pillow 4:2:0; JPEG≈size is the highest quality whose file is ≤ ours.  "
        f"HEVC is one fixed QP ({args.hevc_qp}) for all rows, so it is not size-matched (see its bpp below).",
        "",
    ]

    if args.refine:
        ref_hdr = ["q", "bpp plain → refined", "PSNR plain → refined", "R + λD refined / plain", "enc ms refined",
                   "refined / plain enc", "refined / HEVC enc"]
        ref_rows = []
        for q, rows in per_q.items():
            m = lambda k: med(r[k] for r in rows)  # noqa: E731
            ha = {r["image"]: anchors[r["image"]].get("hevc") for r in rows}
            ref_rows.append([
                str(q), f"{m('bpp'):.3f} → {m('ref_bpp'):.3f}", f"{m('psnr'):.2f} → {m('ref_psnr'):.2f}",
                f"{m('ref_cost_ratio'):.3f}", f"{1e3 * m('ref_enc'):.0f}", f"{med(r['ref_enc'] / r['enc'] for r in rows):.0f}×",
                f"{fmt(med(r['ref_enc'] / ha[r['image']]['enc'] for r in rows if ha[r['image']]), '.1f')}×",
            ])
        lines += [f"## Encoder-side refinement ({args.refine} steps, median across images)", "",
                  markdown_table(ref_hdr, ref_rows), "",
                  "`icm.codec.encode(model, x, refine=N)`: the same decoder reads the file.  The cost column is "
                  "the model's own objective (bpp + λ·255²·MSE) of the coded files; below 1 is better.  "
                  "Refined encodes are timed once per image.", ""]

    det_hdr = ["q", "image", "file B", "payload B", "ideal B", "y B / ideal", "z B / ideal", "ovh y %", "ovh z %",
               "y esc / symbols", "z esc / symbols", "PSNR", "exact ŷ", "FP init ms enc/dec", "JPEG≈ q", "JPEG≈ bpp", "JPEG≈ PSNR"]
    det = []
    for q, rows in per_q.items():
        for r in rows:
            npix = anchors[r["image"]]["pixels"]
            det.append([
                str(q), r["image"], str(r["file"]), str(r["payload"]), f"{r['ideal_bits'] / 8:.0f}",
                f"{r['y_bytes']} / {r['ideal_y_bits'] / 8:.0f}", f"{r['z_bytes']} / {r['ideal_z_bits'] / 8:.0f}",
                fmt(r["ovh_y"], "+.2f"), fmt(r["ovh_z"], "+.2f"), f"{r['esc_y']} / {r['n_y']}", f"{r['esc_z']} / {r['n_z']}",
                f"{r['psnr']:.2f}", "yes" if r["exact"] else "NO",
                f"{r['enc_fp_init_ms']:.2f} / {r['dec_fp_init_ms']:.2f}",
                str(r["jm"]["q"]), f"{8 * r['jm']['bytes'] / npix:.3f}", f"{r['jm']['psnr']:.2f}",
            ])
    lines += ["## Per image", "", markdown_table(det_hdr, det), ""]

    anc_hdr = ["image", f"JPEG q{args.jpeg_quality} bpp", "PSNR", "enc ms", "dec ms",
               f"HEVC qp{args.hevc_qp} bpp", "PSNR", "enc ms", "dec ms", "chroma"]
    anc = []
    for name, a in anchors.items():
        j, h = a["jpeg"], a.get("hevc")
        anc.append([
            name, f"{8 * j['bytes'] / a['pixels']:.3f}", f"{j['psnr']:.2f}", f"{1e3 * j['enc']:.2f}", f"{1e3 * j['dec']:.2f}",
            *( [f"{8 * h['bytes'] / a['pixels']:.3f}", f"{h['psnr']:.2f}", f"{1e3 * h['enc']:.1f}", f"{1e3 * h['dec']:.1f}",
                h["chroma"]] if h else ["–"] * 5),
        ])
    lines += ["## Classical anchors (independent of our quality)", "", markdown_table(anc_hdr, anc), ""]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]

    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
