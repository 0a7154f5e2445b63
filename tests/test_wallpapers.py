"""Debian's wallpaper photos and Tux Paint's photographic stamps: training data only.

The curated lists are checked without the packages; pasting a stamp is checked on
images made here; one marked test opens every listed file where the packages are
installed.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from icm import data
from icm.errors import IcmError

# A wallpaper path's first component(s) -> the package that installs it.
WALLPAPER_PACKAGES = {"backgrounds/mate/": "mate-backgrounds", "wallpapers/": "plasma-workspace-wallpapers"}
MIN_WALLPAPER_SIDE = 1024  # the smallest listed photo is 1280x1024
MIN_STAMP_SIDE = 60  # the smallest listed stamp is 60x116


def _val_and_test() -> set[str]:
    return set(data.VAL_PHOTOS) | set(data.TEST_PHOTOS)


def test_curated_lists_have_no_duplicates_and_no_val_or_test_photo():
    for listed in (data.WALLPAPER_PHOTOS, data.TUXPAINT_STAMPS):
        assert len(listed) == len(set(listed))
        assert all(not p.startswith("/") and os.path.normpath(p) == p for p in listed)
    assert all(any(p.startswith(k) for k in WALLPAPER_PACKAGES) for p in data.WALLPAPER_PHOTOS)
    assert all(p.startswith("tuxpaint/stamps/") and not p.endswith("_mirror.png") for p in data.TUXPAINT_STAMPS)
    held = _val_and_test()
    sources = {f"wallpaper:{p}" for p in data.WALLPAPER_PHOTOS}
    assert not sources & held
    # ...nor the same file reached through another origin.
    held_files = {os.path.basename(s.split(":", 1)[1]) for s in held}
    assert not {os.path.basename(p) for p in data.WALLPAPER_PHOTOS + data.TUXPAINT_STAMPS} & held_files


@pytest.fixture
def fake_share(tmp_path, monkeypatch):
    """Two of the listed wallpapers as small JPEGs under a stand-in for /usr/share."""
    from PIL import Image

    monkeypatch.setattr(data, "SHARE", str(tmp_path))
    for p in data.WALLPAPER_PHOTOS[:1] + data.WALLPAPER_PHOTOS[-1:]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / p)
    return tmp_path


def test_recipes_ask_for_wallpapers_in_training_only(fake_share):
    found = data.wallpaper_photos()
    assert found == (f"wallpaper:{data.WALLPAPER_PHOTOS[0]}", f"wallpaper:{data.WALLPAPER_PHOTOS[-1]}")
    assert data.load_photo(found[0]).shape == (30, 40, 3)
    train = data.recipe_photos({"train_photos": ["skimage:rocket", "set:wallpapers"]}, "train")
    assert train == ("skimage:rocket", *found)
    assert data.recipe_photos({"train_photos": ["skimage:rocket"]}, "train") == ("skimage:rocket",)
    with pytest.raises(ValueError, match="set:wallpapers"):
        data.recipe_photos({"val_photos": ["set:wallpapers"]}, "val")
    with pytest.raises(ValueError, match="training only"):
        data.recipe_photos({"val_photos": list(found)}, "val")
    with pytest.raises(ValueError, match="unknown photo set"):
        data.recipe_photos({"train_photos": ["set:test"]}, "train")


def test_a_recipe_asking_for_absent_wallpapers_names_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "SHARE", str(tmp_path))
    assert data.wallpaper_photos() == ()
    with pytest.raises(IcmError, match="apt-get install mate-backgrounds"):
        data.recipe_photos({"train_photos": ["set:wallpapers"]}, "train")


def _stamp() -> np.ndarray:
    """A 12x20 RGBA stamp of noise: opaque inside, transparent on a 2-pixel border."""
    rng = np.random.default_rng(5)
    stamp = rng.integers(0, 256, size=(12, 20, 4), dtype=np.uint8)
    stamp[..., 3] = 0
    stamp[2:-2, 2:-2, 3] = 255
    return stamp


def test_composite_stamp_keeps_stamp_and_background_and_repeats_with_its_seed():
    size = 40
    background = np.random.default_rng(6).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    stamp = _stamp()
    # the longer side of the stamp is 20 = 0.5 * 40: pasted at its own size
    img, alpha = data.composite_stamp(background, stamp, size, seed=3, scale=(0.5, 0.5))
    assert img.shape == (size, size, 3) and img.dtype == np.uint8 and alpha.shape == (size, size)
    ys, xs = np.nonzero(alpha == 255)
    top, left = ys.min() - 2, xs.min() - 2
    assert (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1) == (8, 16)
    inside = img[top + 2 : top + 10, left + 2 : left + 18]
    assert np.array_equal(inside, stamp[2:-2, 2:-2, :3])
    assert np.array_equal(img[alpha == 0], background[alpha == 0])
    assert (alpha == 0).sum() == size * size - 8 * 16
    again, again_alpha = data.composite_stamp(background, stamp, size, seed=3, scale=(0.5, 0.5))
    assert np.array_equal(img, again) and np.array_equal(alpha, again_alpha)
    other, _ = data.composite_stamp(background, stamp, size, seed=4, scale=(0.5, 0.5))
    assert not np.array_equal(img, other)


def test_composite_stamp_crops_a_larger_background_and_only_shrinks_the_stamp():
    background = np.random.default_rng(7).integers(0, 256, size=(90, 70, 3), dtype=np.uint8)
    stamp = _stamp()
    img, alpha = data.composite_stamp(background, stamp, 32, seed=1, scale=(0.3, 0.4))
    assert img.shape == (32, 32, 3) and 0 < (alpha > 0).sum() < 8 * 16  # shrunk: longer side 10 to 13
    _, alpha = data.composite_stamp(background, stamp, 64, seed=1, scale=(0.9, 1.0))
    assert (alpha == 255).sum() == 8 * 16  # would be 46 to 64 pixels long: pasted at its own 20
    first, _ = data.composite_stamp(background, stamp, 32, seed=np.random.default_rng(2))
    second, _ = data.composite_stamp(background, stamp, 32, seed=np.random.default_rng(2))
    assert np.array_equal(first, second)
    with pytest.raises(ValueError, match="smaller"):
        data.composite_stamp(background, stamp, 80, seed=0)
    with pytest.raises(ValueError, match="scale"):
        data.composite_stamp(background, stamp, 32, seed=0, scale=(0.5, 1.5))


def test_stamp_composites_refuse_val_and_test_photos_and_repeat_with_their_seed():
    stamps = [_stamp()]
    for held in (data.TEST_PHOTOS[0], data.VAL_PHOTOS[0]):
        with pytest.raises(ValueError, match="validation or test"):
            data.StampComposites(["skimage:rocket", held], stamps=stamps, size=32)
    magenta = np.zeros((10, 10, 4), dtype=np.uint8)
    magenta[...] = (255, 0, 255, 255)  # opaque; no pixel of the backgrounds is this colour
    ds = data.StampComposites(["skimage:rocket", "skimage:camera"], stamps=[magenta], size=32, seed=9)
    first = [t for _, t in zip(range(4), ds)]
    second = [t for _, t in zip(range(4), ds)]
    assert all(t.shape == (3, 32, 32) and t.dtype == torch.float32 for t in first)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    pasted = torch.tensor([1.0, 0.0, 1.0])[:, None, None]
    assert all((t == pasted).all(0).sum() >= 9 for t in first)  # at least a 3x3 stamp in each
    assert torch.equal(first[2], ds.crop(2))


def _missing_packages() -> list[str]:
    needed = {pkg: next(p for p in data.WALLPAPER_PHOTOS if p.startswith(prefix))
              for prefix, pkg in WALLPAPER_PACKAGES.items()}
    needed["tuxpaint-stamps-default"] = data.TUXPAINT_STAMPS[0]
    return [pkg for pkg, p in needed.items() if not os.path.isfile(os.path.join(data.SHARE, p))]


@pytest.mark.needs_debian_data("wallpapers")
def test_every_listed_wallpaper_and_stamp_opens_as_a_photo():
    assert not _missing_packages()
    assert data.wallpaper_photos() == tuple(f"wallpaper:{p}" for p in data.WALLPAPER_PHOTOS)
    thumbs = []
    for source in data.wallpaper_photos():
        img = data.load_photo(source)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, source
        assert min(img.shape[:2]) >= MIN_WALLPAPER_SIDE, (source, img.shape)
        assert img.std() > 10, source  # not a flat field
        thumbs.append(img[:: img.shape[0] // 16, :: img.shape[1] // 16][:16, :16].astype(np.int16))
    for i in range(len(thumbs)):  # no picture listed twice under two names
        for j in range(i):
            assert np.abs(thumbs[i] - thumbs[j]).mean() > 8, (data.WALLPAPER_PHOTOS[i], data.WALLPAPER_PHOTOS[j])
    assert len(data.tuxpaint_stamps()) == len(data.TUXPAINT_STAMPS)
    for path in data.tuxpaint_stamps():
        stamp = data.load_stamp(path)
        assert stamp.shape[2] == 4 and min(stamp.shape[:2]) >= MIN_STAMP_SIDE, (path, stamp.shape)
        assert (stamp[..., 3] == 0).any() and (stamp[..., 3] == 255).any(), path


def _magenta(side: int = 10) -> np.ndarray:
    stamp = np.zeros((side, side, 4), dtype=np.uint8)
    stamp[...] = (255, 0, 255, 255)  # opaque; no pixel of the backgrounds is this colour
    return stamp


def _has_stamp(t: torch.Tensor) -> bool:
    return int((t == torch.tensor([1.0, 0.0, 1.0])[:, None, None]).all(0).sum()) >= 9


def _is_crop_of(crop: torch.Tensor, picture: torch.Tensor) -> bool:
    s = crop.shape[-1]
    corner = (picture[:, : picture.shape[1] - s + 1, : picture.shape[2] - s + 1] == crop[:, :1, :1]).all(0)
    return any(torch.equal(picture[:, y: y + s, x: x + s], crop) for y, x in corner.nonzero().tolist())


def test_stamp_composites_paste_on_the_asked_share_of_crops_and_plain_crops_elsewhere():
    photos = ["skimage:rocket", "skimage:camera"]
    half = data.StampComposites(photos, stamps=[_magenta()], size=32, seed=5, fraction=0.5)
    crops = [half.crop(g) for g in range(200)]
    stamped = sum(_has_stamp(t) for t in crops)
    assert 70 <= stamped <= 130  # 100 expected; 4.2 standard deviations either side
    assert torch.equal(crops[7], half.crop(7))  # each crop still repeats with its seed
    # a crop without a stamp is a crop of one of the photos as they are
    plain = next(t for t in crops if not _has_stamp(t))
    pictures = [data.to_tensor(data.load_photo(s)) for s in photos]
    assert any(_is_crop_of(c, p) for p in pictures for c in (plain, plain.flip(-1)))
    pasted = next(t for t in crops if _has_stamp(t))
    assert not any(_is_crop_of(c, p) for p in pictures for c in (pasted, pasted.flip(-1)))
    every = data.StampComposites(photos, stamps=[_magenta()], size=32, seed=5)
    assert all(_has_stamp(every.crop(g)) for g in range(20))
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match="share of crops"):
            data.StampComposites(photos, stamps=[_magenta()], size=32, fraction=bad)


def test_stamp_composites_resize_their_backgrounds_as_photo_crops_do():
    ds = data.StampComposites(["skimage:rocket"], stamps=[_magenta()], size=32, short_sides=[64, 96])
    assert sorted(min(im.shape[:2]) for im in ds.images) == [64, 96]


def test_a_dicm_recipe_trains_on_stamp_composites_when_it_asks(monkeypatch):
    from icm.train.config import validate
    from icm.train.dicm import _datasets

    monkeypatch.setattr(data, "tuxpaint_stamps", lambda: [_magenta()])  # the packages' stamps stand-in
    d = {"kind": "photos", "crop": 32, "batch_size": 2, "train_photos": ["skimage:rocket"],
         "val_photos": ["skimage:astronaut"], "stamps": 0.25, "stamp_scale": [0.3, 0.5]}
    train, _ = _datasets(4, d, seed=1)
    assert isinstance(train, data.StampComposites) and train.fraction == 0.25 and train.scale == (0.3, 0.5)
    assert 15 <= sum(_has_stamp(train.crop(g)) for g in range(100)) <= 40  # 25 expected
    plain, _ = _datasets(4, {k: v for k, v in d.items() if k not in ("stamps", "stamp_scale")}, seed=1)
    assert type(plain) is data.PhotoCrops
    recipe = {"stage": 4, "model": {"name": "dicm-lite0"}, "data": d, "optim": {}, "trainer": {}}
    assert validate(recipe) is recipe
    with pytest.raises(IcmError, match="stamps must be a number"):
        validate({**recipe, "data": {**d, "stamps": "half"}})


def test_exported_weights_say_which_photos_and_stamps_their_run_trained_on(monkeypatch):
    from icm.train.export import _photo_data, _trained_on_photos

    monkeypatch.setattr(data, "tuxpaint_stamps", lambda: ["a.png", "b.png", "c.png"])
    # the split's own list reads opencv-doc's folder: two photos stand in for it
    monkeypatch.setattr(data, "photo_sources", lambda split: ("skimage:camera", "skimage:coffee"))
    split = 2
    plain = _photo_data({"kind": "photos"})
    assert plain["train_photos"] == ["set:train"] and plain["num_photos"] == split and "stamps" not in plain
    more = _photo_data({"train_photos": ["set:train", "skimage:rocket"], "stamps": 0.5})
    assert more["num_photos"] == split + 1 and more["num_split_photos"] == split
    assert more["stamps"]["share_of_crops"] == 0.5 and more["stamps"]["num_stamps"] == 3
    recipe = {"data": {"train_photos": ["set:train", "set:wallpapers"], "stamps": 0.25}}
    assert _trained_on_photos({"recipe": recipe}) == "train, wallpapers; stamps on 25% of crops"
    assert _trained_on_photos({"recipe": {"data": {}}}) == "train"
