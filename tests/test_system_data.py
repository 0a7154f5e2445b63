"""The default test run reads no system data directory; Debian's data is read
only by tests marked ``needs_debian_data`` (run by .ci/run after it installs the
packages), and the library names the install line when that data is missing."""

from __future__ import annotations

import pytest
import system_data_guard

from icm import data
from icm.errors import IcmError


def test_guard_refuses_system_data_in_a_default_test():
    with pytest.raises(system_data_guard.SystemDataAccess, match="reads no system data directory"):
        open("/usr/share/doc/opencv-doc/examples/data/fruits.jpg", "rb")
    with pytest.raises(system_data_guard.SystemDataAccess):
        import os

        os.listdir("/usr/share/datasets")
    hits = system_data_guard.take_hits()  # what the report hook would fail the test with
    assert len(hits) == 2 and all("needs_debian_data" in h for h in hits)


def test_guard_lets_the_system_read_its_own_files():
    from pathlib import Path

    for p in ("/usr/share/zoneinfo/UTC", "/usr/share/fonts/no-such-font.ttf"):
        try:
            Path(p).read_bytes()
        except OSError:
            pass  # absent on this machine: what matters is that the guard let it through
    import os

    for d in ("/usr/share/fonts", "/usr/share/fonts/"):  # matplotlib's font cache scans the directory
        try:
            list(os.scandir(d))
            os.listdir(d)
        except OSError:
            pass
    assert system_data_guard.take_hits() == []


def test_guard_reaches_subprocesses(run_python):
    import subprocess
    import sys

    from conftest import _subprocess_env

    p = subprocess.run([sys.executable, "-c", "open('/usr/share/doc/x/y.jpg')"], capture_output=True,
                       text=True, env=_subprocess_env(), timeout=60)
    assert p.returncode != 0 and "SystemDataAccess" in p.stderr and "reads no system data directory" in p.stderr
    ok = run_python("print(sum(1 for _ in open(__import__('os').devnull)))")
    assert ok.stdout.strip() == "0"


@pytest.mark.needs_debian_data()
def test_marked_tests_may_read_system_data():
    with pytest.raises(FileNotFoundError):
        open("/usr/share/doc/no-such-package-for-icm/file", "rb")
    assert system_data_guard.take_hits() == []


def test_training_splits_name_the_missing_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "OPENCV_DATA", str(tmp_path / "absent"))
    for split in ("train", "val"):
        with pytest.raises(IcmError, match="apt-get install opencv-doc"):
            data.photo_sources(split)
    assert data.photo_sources("test") == data.TEST_PHOTOS


@pytest.mark.needs_debian_data("opencv-doc")
def test_opencv_photos_join_the_training_split_and_stay_out_of_val_and_test():
    train, val, test = (data.photo_sources(s) for s in ("train", "val", "test"))
    opencv = [s for s in train if s.startswith("opencv:")]
    assert len(opencv) >= 40
    assert not set(train) & (set(val) | set(test))
    assert all(s.startswith("opencv:") for s in val)
    img = data.load_photo(val[0])
    assert img.dtype.name == "uint8" and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 64


def test_ci_tests_the_oldest_pair_that_pyproject_allows():
    """.ci/run's oldest torch/torchvision are pyproject's lower bounds (and README names them)."""
    import re
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).resolve().parents[1]
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lower = {m.group(1): m.group(2) for d in deps if (m := re.fullmatch(r"(torch|torchvision)>=([\d.]+)", d))}
    ci = (root / ".ci" / "run").read_text()
    pinned = dict(re.findall(r'OLDEST_TORCH(?:VISION)?="(torch|torchvision)==([\d.]+)"', ci))
    assert set(pinned) == set(lower) == {"torch", "torchvision"}
    for name, version in pinned.items():
        assert version.startswith(lower[name] + ".") or version == lower[name], (name, version, lower[name])
    readme = (root / "README.md").read_text()
    assert f"torch {pinned['torch']} / torchvision {pinned['torchvision']}" in readme
