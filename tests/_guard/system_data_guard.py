"""Fail tests that read system data directories (``/usr/share/...``).

The default test run must pass on a fresh machine with only what README's
test command installs; Debian's data packages (``opencv-doc``,
``dataset-fashion-mnist``, ``labelme-examples``) are not among them.  An audit
hook (:func:`sys.addaudithook`) sees every ``open``, ``os.listdir``,
``os.scandir`` and ``glob.glob`` of the process and refuses paths under
``/usr/share`` while the guard is on, except the directories that the system
itself reads (fonts, time zones, locales, MIME types, certificates).
"""

from __future__ import annotations

import os
import sys

ENV = "ICM_TEST_SYSTEM_DATA_GUARD"
RULE = ("the default test run reads no system data directory (/usr/share/...): use a small fixture "
        "the repo ships or makes, or mark the test needs_debian_data (tests/conftest.py)")
_ROOT = "/usr/share/"
_SYSTEM = tuple(_ROOT + d for d in (
    "fonts/", "fontconfig/", "zoneinfo/", "locale/", "i18n/", "mime/", "ca-certificates/", "X11/",
    "terminfo/", "misc/", "glib-2.0/", "icons/", "themes/", "python-wheels/", "pyshared/",
))
_EVENTS = {"open", "os.listdir", "os.scandir", "glob.glob"}


class SystemDataAccess(RuntimeError):
    """A guarded test touched a system data directory."""


_state = {"installed": False, "allowed": False, "hits": []}


def _path_of(event: str, args: tuple) -> str | None:
    if not args:
        return None
    p = args[0]
    if isinstance(p, int) or p is None:
        return None
    try:
        p = os.fsdecode(p)
    except TypeError:
        return None
    return os.path.abspath(p) if p else None


def _hook(event: str, args: tuple) -> None:
    if event not in _EVENTS or _state["allowed"]:
        return
    path = _path_of(event, args)
    # a system directory itself ("/usr/share/fonts", which matplotlib scans) is as allowed as its files
    if path is None or not (path + "/").startswith(_ROOT) or (path + "/").startswith(_SYSTEM):
        return
    msg = f"{event}({path!r}): {RULE}"
    _state["hits"].append(msg)
    raise SystemDataAccess(msg)


def install() -> None:
    """Add the audit hook (once per process; audit hooks cannot be removed)."""
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True


def set_allowed(allowed: bool) -> None:
    _state["allowed"] = bool(allowed)
    os.environ[ENV] = "0" if allowed else "1"


def allowed() -> bool:
    return _state["allowed"]


def take_hits() -> list[str]:
    hits, _state["hits"] = _state["hits"], []
    return hits
