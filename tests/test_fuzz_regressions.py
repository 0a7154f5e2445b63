"""Every fuzz target's seeds and committed findings (tests/fuzz_regressions/<target>/) go
through the target's contract: an answer or icm's one error type, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from icm.fuzz import TARGETS, check, seeds

HERE = Path(__file__).with_name("fuzz_regressions")
CASES = [(t, p) for t in TARGETS for p in sorted((HERE / t).glob("*")) if p.is_file() and p.name != ".keep"]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_are_answered(target):
    for s in seeds(target):
        TARGETS[target](s)  # a valid seed parses without any error


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_check_lets_only_icm_errors_through(target, monkeypatch):
    check(target, b"\x00garbage")  # an IcmError is an answer
    def broken(data):
        raise IndexError("a parser's bug")

    monkeypatch.setitem(TARGETS, target, broken)
    with pytest.raises(IndexError):  # anything else is a finding
        check(target, b"")


@pytest.mark.parametrize("target,path", CASES, ids=[f"{t}/{p.name}" for t, p in CASES] or None)
def test_committed_findings(target, path):
    check(target, path.read_bytes())
