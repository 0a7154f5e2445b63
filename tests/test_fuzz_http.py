"""A short bounded fuzz of ``icm serve`` on loopback (``python -m icm.fuzz http`` runs it
longer): random and mutated bodies, headers, query strings, slow and aborted uploads;
every status within the API's, the server up and answering a valid file as before."""

from __future__ import annotations

import pytest
from conftest import shipped_qualities

from icm.fuzz import decoders

pytest.importorskip("litserve")
pytestmark = pytest.mark.skipif(not decoders.shipped_families() or
                                not all(shipped_qualities(n) for n in decoders.shipped_families()),
                                reason="needs the shipped weights")


def test_a_short_http_fuzz_finds_nothing_and_the_server_stops(tmp_path):
    from icm.fuzz.http import fuzz

    r = fuzz(seconds=3, requests=200, out=tmp_path, seed=7, check_every=100)
    assert not r["findings"], r["findings"]
    assert r["requests"] >= 30, r
    assert {400, 422} <= set(r["statuses"]) and 200 in r["statuses"], r["statuses"]


def test_a_status_outside_the_api_is_a_finding():
    from icm.fuzz.http import HttpFinding, Request, _check

    _check(Request(b"", "body"), 422, {"content-type": "application/json"}, b'{"error": "unknown task"}')
    with pytest.raises(HttpFinding, match="outside"):
        _check(Request(b"", "body"), 500, {}, b"")
    with pytest.raises(HttpFinding, match="without an answer"):
        _check(Request(b"", "body"), None, {}, b"")
    with pytest.raises(HttpFinding, match="NaN"):
        _check(Request(b"", "body"), 200, {"content-type": "application/json"}, b'{"p": NaN}')
