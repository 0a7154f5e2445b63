"""Who made each photo: Debian's machine-readable copyright files (DEP-5) and the
``.desktop`` cards of Palapeli's puzzles, read into a licence and a credit line."""

from __future__ import annotations

import fnmatch
import posixpath
from dataclasses import dataclass

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".webp", ".svg", ".gif")


@dataclass(frozen=True)
class Credit:
    licence: str
    credit: str


def _stem(path: str) -> str:
    root, ext = posixpath.splitext(path)
    return root if ext.lower() in _IMAGE_EXT else path


class Dep5:
    """A DEP-5 ``debian/copyright`` file: :meth:`lookup` gives the licence and the
    copyright holders of the last ``Files:`` stanza matching a path, as the format
    says.  Image extensions are ignored when matching, because packagers name the
    sources (``fish3.jpg``) while the package ships converted files (``fish3.webp``)."""

    def __init__(self, text: str):
        self.stanzas: list[tuple[list[str], dict[str, str]]] = []
        self.upstream = ""
        for block in text.replace("\r\n", "\n").split("\n\n"):
            fields: dict[str, str] = {}
            key = None
            for row in block.split("\n"):
                if row[:1] in (" ", "\t") and key:
                    fields[key] += "\n" + row.strip()
                elif ":" in row:
                    key, _, value = row.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if "files" in fields:
                self.stanzas.append((fields["files"].split(), fields))
            elif "upstream-name" in fields and not self.upstream:
                self.upstream = fields["upstream-name"]

    def lookup(self, path: str) -> Credit:
        found, by = None, ""
        stem = _stem(path)
        for patterns, fields in self.stanzas:
            for pat in patterns:
                # the extension is ignored only between pictures: "*.jpg" takes x.webp, not notes.txt
                if fnmatch.fnmatchcase(path, pat) or (stem != path and fnmatch.fnmatchcase(stem, _stem(pat))):
                    found, by = fields, pat
                    break
        if found is None:
            return Credit("unknown", "")
        licence = found.get("license", "unknown").split("\n")[0].strip() or "unknown"
        holders = " ".join(found.get("copyright", "").split())
        if by == "*" and self.upstream:  # the package's blanket stanza: its authors, not a photographer
            holders = f"the {self.upstream} authors (debian/copyright, Files: *)"
        source = " ".join(found.get("comment", "").split())
        credit = holders + (f" ({source})" if source.startswith("http") else "")
        return Credit(licence, credit)


def desktop_card(text: str) -> Credit:
    """Licence and author of a Palapeli puzzle's ``.desktop`` card."""
    keys: dict[str, str] = {}
    for row in text.splitlines():
        key, sep, value = row.partition("=")
        if sep and key.strip() not in keys:
            keys[key.strip()] = value.strip()
    licence = keys.get("X-KDE-PluginInfo-License", "unknown") or "unknown"
    author = keys.get("X-KDE-PluginInfo-Author", "")
    name = keys.get("Name", "")
    return Credit(licence, f"{name}, {author}" if name and author else author or name)
