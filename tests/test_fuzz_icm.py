"""The ``.icm`` side's fuzz targets and their structure-aware mutator: the mutations get
past the checksum, and each target reports what breaks its contract (a NaN in an answer,
a decode past its priced time, a 500) as a finding."""

from __future__ import annotations

import random
import time
import zlib

import pytest
import torch
from conftest import shipped_qualities

from icm import bitstream, codec
from icm.fuzz import ICM_TARGETS, TARGETS, check, decoders, seeds
from icm.fuzz.mutate import join, mutate_icm, split

pytestmark = pytest.mark.skipif(not all(shipped_qualities(n) for n in decoders.shipped_families()) or
                                not decoders.shipped_families(), reason="needs the shipped weights")


def test_every_shipped_family_has_a_target():
    assert {f"codec-{f}" for f in decoders.shipped_families()} | {"bitstream", "service"} == set(ICM_TARGETS)
    assert set(ICM_TARGETS) <= set(TARGETS)


def test_split_and_join_are_inverse_on_the_seeds():
    for s in seeds("bitstream"):
        fields, sections = split(s)
        assert join(fields, sections) == s


def test_mutations_get_past_the_checksum_and_stay_in_bounds():
    corpus = seeds("codec-dicm-lite0")
    rng = random.Random(0)
    passed = parsed = 0
    for i in range(2000):
        s = rng.choice(corpus)
        out = mutate_icm(s, 300, i)
        assert len(out) <= 300 and out == mutate_icm(s, 300, i)  # bounded, and one seed, one mutation
        if len(out) > 4 and zlib.crc32(out[:-4]) == int.from_bytes(out[-4:], "little"):
            passed += 1
        try:
            bitstream.unpack(out)
            parsed += 1
        except bitstream.BitstreamError:
            pass
    assert passed > 0.8 * 2000 and parsed > 0.5 * 2000, (passed, parsed)


def test_a_parsed_file_that_does_not_pack_back_is_a_finding(monkeypatch):
    good = seeds("bitstream")[0]
    real = bitstream.pack
    monkeypatch.setattr(bitstream, "pack", lambda h, s: real(h, s) + b"!")
    with pytest.raises(decoders.Finding, match="byte for byte"):
        check("bitstream", good)


def test_nan_in_a_decoded_answer_is_a_finding(monkeypatch):
    data = decoders.coded("hyperprior")[0]
    check("codec-hyperprior", data)  # the real decoder answers
    monkeypatch.setattr(codec, "check_finite", lambda values, what: None)  # the library's own check, removed
    real = codec._on_payload

    def poisoned(f, model, run):
        out = real(f, model, run)
        out["x_hat"] = out["x_hat"] * float("nan")
        return out

    monkeypatch.setattr(codec, "_on_payload", poisoned)
    with pytest.raises(decoders.Finding, match="NaN"):
        check("codec-hyperprior", data)


def test_a_decode_past_its_priced_time_is_a_finding(monkeypatch):
    cost = codec.check_limits(codec.parse(decoders.coded("hyperprior")[0]))

    def burn():
        t = time.process_time()
        while time.process_time() - t < 0.05:
            pass

    decoders.priced(cost, burn, "decode")  # within the slack
    monkeypatch.setattr(decoders, "SLACK_SECONDS", 0.0)
    with pytest.raises(decoders.Finding, match="CPU"):
        decoders.priced(cost, burn, "decode")


def test_a_500_of_the_service_is_a_finding(monkeypatch):
    from icm.serve.service import Service

    monkeypatch.setattr(decoders, "request_of", lambda data: ("analyze", None, None, None))
    data = decoders.coded("dicm-lite0")[0]
    check("service", data)
    def broken(self, job):
        raise RuntimeError("a bug inside the model")

    monkeypatch.setattr(Service, "_compute", broken)
    # the service turns the failure into a 500 (the server goes on); the target calls it a finding
    with pytest.raises(decoders.Finding, match="500"):
        check("service", data)


def test_the_targets_keep_torch_at_its_threads():
    before = torch.get_num_threads()
    check("codec-dicm-lite0", decoders.coded("dicm-lite0")[0])
    assert torch.get_num_threads() == before


def test_the_price_is_of_the_padded_picture():
    """The finding of ``tests/fuzz_regressions/codec-hyperprior/padded-area-unpriced``: every
    decoder pads to its stride, and the header's price must count the padding."""
    from icm.models import model_info

    for family in decoders.shipped_families():
        model = codec.get_model(family, shipped_qualities(family)[0])
        cost = model_info(family).cost
        assert cost.pad_to == model.stride, family
        assert cost(1, model.stride * 8) == cost(model.stride, model.stride * 8)
