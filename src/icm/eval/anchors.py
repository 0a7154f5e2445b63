"""Classical image codecs as rate–distortion anchors, with fair settings.

Every anchor codes a ``uint8`` RGB image to a real, self-contained file and
decodes it back; rates count the whole file (see :mod:`icm.eval.payload` for
the container-free payload).  Settings follow DESIGN.md, "Classical anchors:
settings that make them fair":

===========  ====================================  ==========================
name         codec, library                        swept setting
===========  ====================================  ==========================
jpeg420      JPEG 4:2:0, Pillow (libjpeg)          quality 1–100
jpeg444      JPEG 4:4:4, Pillow (libjpeg)          quality 1–100
webp         WebP (VP8) method 6, Pillow           quality 0–100
avif         AVIF 4:4:4 (libaom), Pillow           quality 0–100
hevc         HEVC 4:4:4 (x265), pillow-heif        QP 0–51 (BPG stand-in)
vvc          VVC 4:2:0 10-bit (VVenC), ffmpeg of   QP 0–63
             imageio-ffmpeg
jxl          JPEG XL (libjxl), imagecodecs         quality 0–99 → distance
===========  ====================================  ==========================

Every encoder and decoder runs on one thread, so that timings compare like
with like (parallelise over images instead).  A greyscale image (three equal
channels, e.g. Fashion-MNIST) is coded as one channel wherever the format has
a monochrome mode — JPEG, AVIF and HEVC 4:0:0, JPEG XL greyscale — so no bits
go to flat chroma; WebP (VP8 has no such mode) and VVC code it as colour.  The only anchor that takes
Y'CbCr from us is VVC; its conversion is :mod:`icm.eval.colour` (BT.601 full
range, the matrix JPEG, libheif and libavif use internally).

    >>> from icm.eval.anchors import code
    >>> c = code("hevc", img, 32)          # img: uint8 (H, W, 3)
    >>> len(c.data), c.payload_bytes, c.decoded.shape
"""

from __future__ import annotations

import functools
import importlib.util
import io
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from ..errors import IcmError
from . import colour, payload

__all__ = ["ANCHORS", "Anchor", "Coded", "code", "get_anchor", "list_anchors"]


@dataclass(frozen=True)
class Coded:
    """One coded image: the file, its payload size, the reconstruction and timings."""

    data: bytes  # the whole file
    payload_bytes: int  # coded data without the container (icm.eval.payload)
    decoded: np.ndarray  # uint8 (H, W, 3) RGB reconstruction
    encode_s: float  # wall seconds to encode (perf_counter)
    decode_s: float  # wall seconds to decode

    @property
    def bpp(self) -> float:
        """Bits per pixel of the whole file."""
        h, w = self.decoded.shape[:2]
        return 8.0 * len(self.data) / (h * w)

    @property
    def payload_bpp(self) -> float:
        h, w = self.decoded.shape[:2]
        return 8.0 * self.payload_bytes / (h * w)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def is_grey(img: np.ndarray) -> bool:
    """Whether a ``(H, W, 3)`` image has three equal channels."""
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2]))


def _rgb(arr: np.ndarray) -> np.ndarray:
    """A decoded ``(H, W)`` greyscale picture as ``(H, W, 3)``; colour passes through."""
    return np.ascontiguousarray(np.repeat(arr[..., None], 3, axis=2)) if arr.ndim == 2 else arr


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise IcmError(f"anchors code uint8 RGB images of shape (H, W, 3), got {img.dtype} {img.shape}")
    if img.shape[0] < 8 or img.shape[1] < 8:
        raise IcmError(f"image {img.shape[0]}x{img.shape[1]} is too small for the anchors (at least 8x8)")
    return np.ascontiguousarray(img)


@contextmanager
def _setattr(obj, name: str, value):
    """Set a library's module-level option for the duration of a call, then restore it."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class Anchor:
    """A classical codec under fixed settings; one quality knob is swept.

    Subclasses set the class attributes and implement ``_encode`` / ``_decode``
    (which may assume :meth:`check` passed and the input is valid).
    """

    name: str = ""  # registry key
    label: str = ""  # for plots
    qualities: tuple = ()  # default sweep, low to high rate
    quality_param: str = "quality"  # what the swept integer is ("quality", "qp")
    quality_range: tuple[int, int] = (0, 100)  # inclusive bounds the encoder accepts
    package: str = ""  # pip package that provides the codec
    module: str = ""  # import name of that package
    fmt: str = ""  # payload format (icm.eval.payload.sniff names)
    even_sides: bool = False  # the format codes even sides only: odd sources are padded, decode crops
    monochrome: bool = False  # greyscale input is coded as one channel (``_encode`` gets ``(H, W)``)

    def check(self) -> None:
        """Raise :class:`IcmError` naming the package to install if this anchor cannot run."""
        try:
            __import__(self.module)
        except ImportError as e:
            raise IcmError(f"the {self.label} anchor ({self.name}) needs the '{self.package}' package: "
                           f"pip install {self.package}") from e

    def _check_quality(self, quality) -> int:
        lo, hi = self.quality_range
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not lo <= quality <= hi:
            raise IcmError(f"{self.name}: {self.quality_param} must be an integer in {lo}..{hi}, got {quality!r}")
        return int(quality)

    def encode(self, img: np.ndarray, quality) -> bytes:
        """Code ``img`` (uint8 (H, W, 3) RGB) at ``quality`` (see ``quality_param``) to a whole file."""
        self.check()
        img = _check_image(img)
        if self.monochrome and is_grey(img):
            img = np.ascontiguousarray(img[..., 0])
        return self._encode(img, self._check_quality(quality))

    def decode(self, data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
        """Decode a file made by :meth:`encode` to uint8 (H, W, 3) RGB.

        ``size`` = (H, W) crops to the source size where the format cannot
        signal it (VVC 4:2:0 codes even sides only); other anchors check it.
        """
        self.check()
        try:
            rec = self._decode(bytes(data))
        except IcmError:
            raise
        except Exception as e:  # the libraries raise OSError, RuntimeError, their own types …
            raise IcmError(f"{self.name}: cannot decode {len(data)} bytes as {self.label}: {e}") from e
        if size is not None and rec.shape[:2] != tuple(size):
            h, w = size
            if not (self.even_sides and rec.shape[0] - h in (0, 1) and rec.shape[1] - w in (0, 1)):
                raise IcmError(f"{self.name}: decoded {rec.shape[0]}x{rec.shape[1]}, expected {h}x{w}")
            rec = np.ascontiguousarray(rec[:h, :w])
        return rec

    def payload_bytes(self, data: bytes) -> int:
        """Bytes of coded data without the container (:mod:`icm.eval.payload`)."""
        return payload.payload_bytes(data, self.fmt)

    def settings(self) -> dict:
        """The exact encoder settings, for the JSON report (never raises for a missing package)."""
        return {"name": self.name, "label": self.label, "package": self.package,
                "package_version": _version(self.package), "quality_param": self.quality_param,
                "qualities": list(self.qualities), "threads": 1,
                "greyscale_input": "one channel" if self.monochrome else "coded as colour", **self._settings()}

    def _settings(self) -> dict:
        return {}

    def _encode(self, img: np.ndarray, quality: int) -> bytes:
        raise NotImplementedError

    def _decode(self, data: bytes) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<anchor {self.name}: {self.label}>"


class _PillowAnchor(Anchor):
    package = "pillow"
    module = "PIL"
    feature = ""  # PIL.features name the plugin needs
    pil_format = ""

    def check(self) -> None:
        super().check()
        from PIL import features

        if not features.check(self.feature):
            raise IcmError(f"the {self.label} anchor ({self.name}) needs Pillow built with {self.feature} "
                           f"support: pip install --upgrade pillow")

    def _save_kwargs(self, quality: int) -> dict:
        raise NotImplementedError

    def _encode(self, img, quality):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=self.pil_format, **self._save_kwargs(quality))
        return buf.getvalue()

    def _decode(self, data):
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def _settings(self):
        kw = self._save_kwargs(self.qualities[0])
        kw.pop("quality", None)
        return {"library": f"Pillow {_version('pillow')}", "format": self.pil_format, "save": kw}


class JPEG(_PillowAnchor):
    """Baseline JPEG through Pillow (libjpeg-turbo) with optimised Huffman tables."""

    fmt = "jpeg"
    monochrome = True
    feature = "jpg"
    pil_format = "JPEG"
    quality_range = (1, 100)
    qualities = (2, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98)

    def __init__(self, subsampling: int, name: str, label: str):
        self.subsampling, self.name, self.label = subsampling, name, label

    def _save_kwargs(self, quality):
        # optimize=True: per-image Huffman tables (cjpeg -optimize), free rate for the anchor.
        return {"quality": quality, "subsampling": self.subsampling, "optimize": True}


class WebP(_PillowAnchor):
    """Lossy WebP (VP8, 4:2:0) through Pillow (libwebp), slowest / best method 6."""

    name, label = "webp", "WebP"
    fmt = "webp"
    feature = "webp"
    pil_format = "WEBP"
    qualities = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)

    def _save_kwargs(self, quality):
        return {"quality": quality, "method": 6, "lossless": False}


class AVIF(_PillowAnchor):
    """AVIF 4:4:4 through Pillow's plugin (libavif + libaom), speed 4, tuned for PSNR."""

    name, label = "avif", "AVIF 4:4:4 (libaom)"
    fmt = "isobmff"
    monochrome = True
    feature = "avif"
    pil_format = "AVIF"
    qualities = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)

    def _save_kwargs(self, quality):
        return {"quality": quality, "subsampling": "4:4:4", "speed": 4, "codec": "aom", "range": "full",
                "max_threads": 1, "advanced": {"tune": "psnr"}}

    def _encode(self, img, quality):
        from PIL import Image

        kw = self._save_kwargs(quality)
        if img.ndim == 2:
            kw["subsampling"] = "4:0:0"  # libavif would otherwise turn the greyscale picture into 4:4:4 colour
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=self.pil_format, **kw)
        return buf.getvalue()

    def _decode(self, data):
        from PIL import AvifImagePlugin

        with _setattr(AvifImagePlugin, "DEFAULT_MAX_THREADS", 1):
            return super()._decode(data)

    def _settings(self):
        from PIL import features

        s = super()._settings()
        s["libavif"] = features.version("avif")
        return s


HEVC_PARAMS = {"tune": "psnr", "x265:aq-mode": "0", "x265:psy-rd": "0", "x265:psy-rdoq": "0"}
"""x265 settings of DESIGN.md: no psycho-visual tuning, no adaptive quantisation; QP set per call."""
_X265_THREADS = {"x265:pools": "1", "x265:frame-threads": "1"}  # threading only: the bits do not change


class HEVC(Anchor):
    """HEVC 4:4:4 in HEIF through pillow-heif (libheif + x265): the BPG stand-in.

    Measured within ±0.7% BD-rate of real BPG (DESIGN.md).  ``quality=50`` is
    passed because ``quality=-1`` means lossless and would override the QP.
    """

    name, label = "hevc", "HEVC 4:4:4 (x265)"
    package, module = "pillow-heif", "pillow_heif"
    fmt = "isobmff"
    monochrome = True  # a greyscale picture goes to x265 as 4:0:0
    quality_param = "qp"
    quality_range = (0, 51)
    qualities = (51, 47, 43, 39, 35, 31, 27, 23, 19, 15)

    def _enc_params(self, qp: int) -> dict:
        return {**HEVC_PARAMS, **_X265_THREADS, "x265:qp": str(qp)}

    def _encode(self, img, qp):
        import pillow_heif
        from PIL import Image

        buf = io.BytesIO()
        pillow_heif.from_pillow(Image.fromarray(img)).save(buf, quality=50, chroma=444, enc_params=self._enc_params(qp))
        return buf.getvalue()

    def _decode(self, data):
        import pillow_heif

        with _setattr(pillow_heif.options, "DECODE_THREADS", 1):
            heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
            return np.asarray(heif.to_pillow().convert("RGB"))

    def _settings(self):
        s = {"save": {"quality": 50, "chroma": 444, "enc_params": {k: v for k, v in self._enc_params(0).items()
                                                                    if k != "x265:qp"}}}
        if importlib.util.find_spec("pillow_heif"):  # settings never raise
            import pillow_heif

            s["libheif"] = pillow_heif.libheif_info()
        return s


class VVC(Anchor):
    """VVC intra, 4:2:0 10-bit, through the ffmpeg of imageio-ffmpeg (libvvenc; decoded by ffmpeg's vvc).

    Not VTM: VVenC at preset ``medium`` without perceptual QP adaptation.
    ``-g 1`` selects VVenC's all-intra configuration: a single picture is
    intra-coded either way, but the default random-access GOP of 32 writes
    its reference-picture-list structures into the SPS (154 instead of 45
    bytes at 64×64, measured).  The access-unit delimiter, which carries
    nothing for one picture, is turned off (7 bytes).  The file is tagged
    BT.601 full range, BT.709 primaries, sRGB transfer (7 bytes of VUI) so any
    decoder shows it right.
    """

    name, label = "vvc", "VVenC 4:2:0"
    package, module = "imageio-ffmpeg", "imageio_ffmpeg"
    fmt = "vvc"
    even_sides = True
    quality_param = "qp"
    quality_range = (0, 63)
    qualities = (55, 51, 47, 43, 39, 35, 31, 27, 23, 19, 15, 11)
    bits = 10
    _TAGS = ["-color_range", "pc", "-colorspace", "smpte170m", "-color_primaries", "bt709",
             "-color_trc", "iec61966-2-1"]
    _ENC = ["-c:v", "libvvenc", "-preset", "medium", "-qpa", "0", "-threads", "1", "-g", "1",
            "-vvenc-params", "AccessUnitDelimiter=0"]

    def check(self) -> None:
        super().check()
        import imageio_ffmpeg

        _ffmpeg_has_vvc(imageio_ffmpeg.get_ffmpeg_exe())

    def _ffmpeg(self) -> str:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()

    def _encode(self, img, qp):
        y, cb, cr = colour.rgb_to_yuv420(img, self.bits)
        h, w = y.shape
        with tempfile.TemporaryDirectory(prefix="icm-vvc-") as tmp:
            src, out = Path(tmp) / "in.yuv", Path(tmp) / "out.266"
            src.write_bytes(colour.planes_to_bytes((y, cb, cr)))
            _run([self._ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
                  "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", *self._TAGS, "-i", str(src),
                  "-frames:v", "1", *self._ENC, "-qp", str(qp), *self._TAGS, "-f", "vvc", str(out)], "encode")
            return out.read_bytes()

    def _decode(self, data):
        with tempfile.TemporaryDirectory(prefix="icm-vvc-") as tmp:
            src, out = Path(tmp) / "in.266", Path(tmp) / "out.y4m"
            src.write_bytes(data)
            # Y4M rather than raw: its header carries the picture size.
            _run([self._ffmpeg(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-threads", "1",
                  "-f", "vvc", "-i", str(src), "-frames:v", "1", "-f", "yuv4mpegpipe", "-pix_fmt", "yuv420p10le",
                  "-strict", "-1", str(out)], "decode")
            h, w, raw = _read_y4m(out.read_bytes())
        return colour.yuv420_to_rgb(*colour.bytes_to_yuv420(raw, h, w), bits=self.bits)

    def _settings(self):
        s = {"ffmpeg_args": self._ENC + ["-qp", "<qp>"] + self._TAGS, "input": "yuv420p10le (icm.eval.colour)",
             "colour": colour.MATRIX, "chroma": "4:2:0, 2x2 mean down, bilinear up (centre-sited)",
             "odd_sizes": "padded to even by edge repetition, cropped after decoding"}
        try:
            s["ffmpeg"] = _ffmpeg_version(self._ffmpeg())
        except Exception:  # imageio-ffmpeg missing: settings never raise
            pass
        return s


def _run(cmd: list[str], what: str) -> None:
    p = subprocess.run(cmd, capture_output=True)
    if p.returncode != 0:
        err = p.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed to {what} VVC (exit {p.returncode}): {err[-1] if err else 'no message'}")


def _read_y4m(data: bytes) -> tuple[int, int, bytes]:
    end = data.find(b"\n")
    head = data[:end].split()
    if end < 0 or not head or head[0] != b"YUV4MPEG2":
        raise RuntimeError("ffmpeg wrote no Y4M picture")
    fields = {t[:1]: t[1:] for t in head[1:]}
    if not fields.get(b"C", b"").startswith(b"420p10"):
        raise RuntimeError(f"ffmpeg decoded VVC to {fields.get(b'C', b'?').decode()}, expected 4:2:0 10-bit")
    h, w = int(fields[b"H"]), int(fields[b"W"])
    frame = data.find(b"\n", end + 1)
    if data[end + 1 : frame] != b"FRAME":
        raise RuntimeError("ffmpeg wrote a Y4M file without a frame")
    return h, w, data[frame + 1 : frame + 1 + 3 * h * w]


@functools.lru_cache(maxsize=4)
def _ffmpeg_version(exe: str) -> str:
    return subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True).stdout.split("\n")[0]


@functools.lru_cache(maxsize=4)
def _ffmpeg_has_vvc(exe: str) -> None:
    enc = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    dec = subprocess.run([exe, "-hide_banner", "-decoders"], capture_output=True, text=True).stdout
    if " libvvenc " not in enc or " vvc " not in dec:
        raise IcmError(f"the VVenC 4:2:0 anchor (vvc) needs an ffmpeg with the libvvenc encoder and the vvc "
                       f"decoder; {exe} lacks them: pip install --upgrade imageio-ffmpeg")


def jxl_distance(quality: int) -> float:
    """libjxl's ``JxlEncoderDistanceFromQuality`` (cjxl ``-q``): 90 → 1.0, 30 → 6.4, 0 → 25."""
    if quality >= 100:
        return 0.0
    if quality >= 30:
        return 0.1 + (100 - quality) * 0.09
    return 53.0 / 3000.0 * quality * quality - 23.0 / 20.0 * quality + 25.0


class JXL(Anchor):
    """JPEG XL (VarDCT, XYB) through imagecodecs (libjxl), effort 7, bare codestream.

    The integer quality is cjxl's ``-q`` scale, turned into a Butteraugli
    distance by libjxl's own formula (:func:`jxl_distance`) and passed as
    ``distance``, so the setting is exact whatever imagecodecs' ``level`` means.
    """

    name, label = "jxl", "JPEG XL (libjxl)"
    package = module = "imagecodecs"
    fmt = "jxl"
    monochrome = True
    quality_range = (0, 99)
    qualities = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97)
    effort = 7

    def check(self) -> None:
        super().check()
        import imagecodecs

        if not imagecodecs.JPEGXL.available:
            raise IcmError("the JPEG XL anchor (jxl) needs the 'imagecodecs' package built with JPEG XL: "
                           "pip install --upgrade imagecodecs")

    def _encode(self, img, quality):
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(img, effort=self.effort, distance=jxl_distance(quality),
                                               numthreads=1))

    def _decode(self, data):
        import imagecodecs

        return _rgb(np.asarray(imagecodecs.jpegxl_decode(data, numthreads=1)))

    def _settings(self):
        s = {"jpegxl_encode": {"effort": self.effort, "distance": "jxl_distance(quality)", "numthreads": 1},
             "distances": {q: round(jxl_distance(q), 4) for q in self.qualities}}
        if importlib.util.find_spec("imagecodecs"):  # settings never raise
            import imagecodecs

            s["libjxl"] = imagecodecs.jpegxl_version()
        return s


ANCHORS: dict[str, Anchor] = {}


def _register(anchor: Anchor) -> None:
    if anchor.name in ANCHORS:
        raise ValueError(f"duplicate anchor name {anchor.name!r}")
    ANCHORS[anchor.name] = anchor


for _a in (JPEG(2, "jpeg420", "JPEG 4:2:0"), JPEG(0, "jpeg444", "JPEG 4:4:4"), WebP(), AVIF(), HEVC(), VVC(), JXL()):
    _register(_a)


def list_anchors() -> list[str]:
    return list(ANCHORS)


def get_anchor(name: str) -> Anchor:
    try:
        return ANCHORS[name]
    except (KeyError, TypeError):
        raise IcmError(f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}") from None


def code(name_or_anchor: str | Anchor, img: np.ndarray, quality) -> Coded:
    """Encode ``img`` with an anchor at ``quality``, decode it, time both and count the payload."""
    anchor = name_or_anchor if isinstance(name_or_anchor, Anchor) else get_anchor(name_or_anchor)
    img = _check_image(img)
    t0 = time.perf_counter()
    data = anchor.encode(img, quality)
    t1 = time.perf_counter()
    rec = anchor.decode(data, size=img.shape[:2])
    t2 = time.perf_counter()
    if rec.shape != img.shape or rec.dtype != np.uint8:
        raise IcmError(f"{anchor.name} decoded {rec.dtype} {rec.shape} for a {img.shape} image")
    return Coded(data=data, payload_bytes=anchor.payload_bytes(data), decoded=rec, encode_s=t1 - t0, decode_s=t2 - t1)
