"""A client of ``icm serve``: the standard library only, so an edge device needs nothing more.

>>> c = Client("http://127.0.0.1:8000", token=None)
>>> c.analyze(open("photo.icm", "rb").read(), task="classify")   # the JSON of `icm analyze --json`

It retries, with exponential backoff, when the server answers 503 (queue full or
still loading; its ``Retry-After`` is honoured) and when a connection drops;
any other error status raises :class:`ServerError` with the server's one line.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException as _HTTPClientError

from .errors import IcmError


class ServerError(IcmError):
    """The server answered with an error status (``status``; the message is its one line)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"server answered {status}: {message}")
        self.status = status


class Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 4,
                 backoff: float = 0.25):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise IcmError(f"not an http(s) URL: {url!r}")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.retries, self.backoff = retries, backoff

    # -- the API ------------------------------------------------------------------------------------------

    def health(self) -> dict:
        return json.loads(self._request("GET", "/health"))

    def models(self) -> list[dict]:
        return json.loads(self._request("GET", "/v1/models"))["models"]

    def analyze(self, data: bytes, task: str | None = None, top: int | None = None,
                score_thresh: float | None = None) -> dict:
        """The server's answer for one ``.icm`` file: what ``icm analyze --json`` prints, without "file"."""
        query = {k: v for k, v in (("task", task), ("top", top), ("score_thresh", score_thresh)) if v is not None}
        return json.loads(self._request("POST", "/v1/analyze", data, query))

    def decompress(self, data: bytes) -> bytes:
        """PNG bytes of the reconstruction (models with a pixel decoder)."""
        return self._request("POST", "/v1/decompress", data)

    def metrics(self) -> str:
        return self._request("GET", "/metrics").decode()

    # -- transport ----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None, query: dict | None = None) -> bytes:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        last = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(url, data=body, method=method, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return resp.read()
            except urllib.error.HTTPError as e:
                raw = e.read()
                if e.code != 503 or attempt == self.retries:
                    raise ServerError(e.code, _message(raw)) from None
                last = ServerError(e.code, _message(raw))
                wait = _retry_after(e.headers.get("Retry-After"))
            except (urllib.error.URLError, ConnectionError, socket.timeout, _HTTPClientError) as e:
                if attempt == self.retries:
                    reason = getattr(e, "reason", e)
                    raise IcmError(f"cannot reach {self.url}: {reason}") from None
                last, wait = e, None
            delay = self.backoff * (2 ** attempt) * (1 + random.random() / 4)
            time.sleep(max(delay, wait or 0.0))
        raise IcmError(f"cannot reach {self.url}: {last}")  # not reached


def _message(raw: bytes) -> str:
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", "replace") or "no message"


def _retry_after(value: str | None) -> float | None:
    try:
        return min(30.0, float(value)) if value else None
    except ValueError:
        return None
