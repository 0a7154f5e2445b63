"""Writing outputs without losing a user's files.

The rules of the command line (docs/design.md): never write over an input;
keep an existing output unless ``force``; write to a temporary file in the
destination's folder and rename it into place, so an interrupted or failed
write leaves no half-written file and no damaged original.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import IcmError


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def check_output(dest: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (), force: bool = False) -> Path:
    """Refuse ``dest`` before any work if writing it could lose data or must fail.

    Raises:
        IcmError: ``dest`` is one of ``inputs`` (even with ``force``), exists and
            ``force`` is not set, is a directory, or its folder does not exist or
            is not a folder.
    """
    dest = Path(dest)
    for src in inputs:
        if _same_file(dest, Path(src)):
            raise IcmError(f"{dest}: output would overwrite its input {src}; choose another name with -o")
    if dest.is_dir():
        raise IcmError(f"{dest}: is a directory; name an output file")
    if dest.exists() and not force:
        raise IcmError(f"{dest}: already exists; use --force to overwrite it")
    parent = dest.parent
    if not parent.exists():
        raise IcmError(f"cannot write {dest}: folder {parent} does not exist")
    if not parent.is_dir():
        raise IcmError(f"cannot write {dest}: {parent} is not a folder")
    return dest


def prepare_dir(path: str | os.PathLike) -> Path:
    """Create an output folder (and its parents); :class:`IcmError` if that fails."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise IcmError(f"{path}: exists and is not a folder") from None
    except OSError as e:
        raise IcmError(f"cannot create folder {path}: {e.strerror or e}") from None
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(dest: str | os.PathLike, data: bytes | Callable[[Path], None]) -> Path:
    """Write ``data`` (bytes, or a function that writes a given path — the path has a
    ``.part`` suffix, so name the format explicitly) to a temporary file beside
    ``dest`` and rename it to ``dest``.

    Raises:
        IcmError: the write or the rename failed (the temporary file is removed,
            ``dest`` is left as it was).
    """
    dest = Path(dest)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        tmp = Path(name)
        if callable(data):
            os.close(fd)
            data(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, dest)
        tmp = None
    except OSError as e:
        raise IcmError(f"cannot write {dest}: {e.strerror or e}") from None
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
    return dest
