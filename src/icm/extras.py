"""The optional parts of icm and the pip extras that install them.

``pip install icm`` (the core) encodes, decodes and analyses ``.icm`` files
(``icm compress / decompress / analyze / info / models``); the rest comes in
extras (``pyproject.toml``, ``[project.optional-dependencies]``):

============  ==============================================================  =====================
extra         distributions                                                   commands
============  ==============================================================  =====================
``eval``      pillow-heif, imagecodecs, imageio-ffmpeg (classical anchors),   ``icm eval``,
              matplotlib, bjontegaard, torchmetrics, pycocotools,             ``icm demo`` (dicm-lite0:
              scikit-image, scikit-learn                                      the HEVC anchor)
``train``     lightning, pyyaml, torchmetrics, pycocotools, scikit-image,     ``icm train``,
              scikit-learn, matplotlib, imageio-ffmpeg                        ``icm data pull``
``detect``    pycocotools, torchmetrics (COCO data and mAP)                   (library use)
``serve``     litserve                                                        ``icm serve``
``onnx``      onnx, onnxruntime (the sender as ONNX graphs, for icm-edge)     ``icm export-onnx``
``anchors``   pillow-heif, imagecodecs, imageio-ffmpeg (the anchor codecs)    (part of ``eval``)
============  ==============================================================  =====================

:data:`EXTRAS` mirrors that table by import name (a test checks it against
``pyproject.toml``).  :func:`explain` turns the :class:`ModuleNotFoundError` of
a missing optional module into :class:`MissingExtra`, one line naming the
extra, and ``icm`` (:func:`icm.cli.main`) does so for every command, so a
command needs no code of its own for it; :data:`COMMANDS` lists the modules a
command checks before it starts (:func:`check_command`).
"""

from __future__ import annotations

import importlib.util

from .errors import IcmError

DISTRIBUTIONS: dict[str, str] = {
    # import name -> the distribution that provides it
    "pillow_heif": "pillow-heif",
    "imagecodecs": "imagecodecs",
    "imageio_ffmpeg": "imageio-ffmpeg",
    "matplotlib": "matplotlib",
    "bjontegaard": "bjontegaard",
    "torchmetrics": "torchmetrics",
    "pycocotools": "pycocotools",
    "skimage": "scikit-image",
    "sklearn": "scikit-learn",
    "lightning": "lightning",
    "pytorch_lightning": "lightning",
    "yaml": "pyyaml",
    "litserve": "litserve",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}

_ANCHORS = ("pillow_heif", "imagecodecs", "imageio_ffmpeg")

EXTRAS: dict[str, tuple[str, ...]] = {
    # extra -> import names it provides (most specific extras first: explain() names the first that fits)
    "detect": ("pycocotools", "torchmetrics"),
    "serve": ("litserve",),
    "onnx": ("onnx", "onnxruntime"),
    "eval": (*_ANCHORS, "matplotlib", "bjontegaard", "torchmetrics", "pycocotools", "skimage", "sklearn"),
    "train": ("lightning", "pytorch_lightning", "yaml", "torchmetrics", "pycocotools", "skimage", "sklearn",
              "matplotlib", "imageio_ffmpeg"),
    "anchors": _ANCHORS,
}

COMMANDS: dict[str, tuple[str, tuple[str, ...]]] = {
    # icm subcommand -> (the extra it needs, modules checked before it starts)
    "eval": ("eval", ("matplotlib", "bjontegaard")),
    "train": ("train", ("lightning", "yaml")),
    "serve": ("serve", ("litserve",)),
    "export-onnx": ("onnx", ("onnx", "onnxruntime")),
}


class MissingExtra(IcmError):
    """A command needs an extra that is not installed (one line: ``icm: error: …``)."""

    def __init__(self, what: str, extra: str, why: str = "", hint: str = ""):
        self.what, self.extra = what, extra
        super().__init__(f"{what} needs the '{extra}' extra{' ' + why if why else ''}: "
                         f"pip install 'icm[{extra}]'{'; ' + hint if hint else ''}")


def extra_for(module: str, command: str | None = None) -> str | None:
    """The extra that installs ``module`` (a dotted name is taken by its top level), or ``None``.

    ``command`` (an icm subcommand) prefers the extra that command needs, so a
    module shared by several extras is named as the one the user should install.
    """
    top = module.split(".")[0]
    if command in COMMANDS and top in EXTRAS[COMMANDS[command][0]]:
        return COMMANDS[command][0]
    for extra, modules in EXTRAS.items():
        if extra != "anchors" and top in modules:
            return extra
    return None


def missing(*modules: str) -> list[str]:
    """Those of ``modules`` that cannot be imported (found without importing them)."""
    out = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a finder refused it; sys.modules[name] is None
            found = False
        if not found:
            out.append(name)
    return out


def require(what: str, extra: str, *modules: str, why: str = "", hint: str = "") -> None:
    """Raise :class:`MissingExtra` for ``what`` (e.g. ``"icm demo"``) unless all ``modules`` import."""
    if missing(*modules):
        raise MissingExtra(what, extra, why, hint)


def check_command(command: str) -> None:
    """Raise :class:`MissingExtra` if ``icm COMMAND`` needs an extra that is not installed."""
    if command in COMMANDS:
        extra, modules = COMMANDS[command]
        require(f"icm {command}", extra, *modules)


def explain(error: ModuleNotFoundError, command: str | None = None) -> MissingExtra | None:
    """:class:`MissingExtra` for the missing module of ``error`` if an extra provides it, else ``None``."""
    name = getattr(error, "name", None)
    extra = extra_for(name, command) if name else None
    if extra is None:
        return None
    return MissingExtra(f"icm {command}" if command else "icm", extra)
