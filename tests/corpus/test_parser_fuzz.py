"""Property-based fuzzing of every parser that reads outside data (TESTPLAN B16, E40-44, F48,
issue 9 item 2): for any input each one parses or refuses with our error type, never another
exception, and never a hang (a per-example deadline far above a normal parse).

The quick tier runs in the default suite (a few hundred examples per parser); the slow tier
runs the same targets with ten times as many examples and is marked ``slow``.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings

from tests.corpus.targets import TARGETS, Target

#: Generous: the slowest target (config, copying a folder per example) takes ~10 ms; a parser
#: that loops on hostile input blows through this and fails as DeadlineExceeded.
DEADLINE = timedelta(seconds=2)


def _run(target: Target, examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=DEADLINE,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(target.inputs)
    def fuzz(value: object) -> None:
        target.check(value)

    fuzz()


#: Targets whose one example costs ~10-30 ms (a folder copied per example; an Ed25519
#: verification with the small-order check) get a smaller share, so each tier stays short.
_COSTLY = {"config": 5, "signed-manifest": 3, "signed-receipt": 3}


def _examples(target: Target, base: int) -> int:
    return base // _COSTLY.get(target.name, 1)


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_accepts_or_refuses_with_our_error(target: Target) -> None:
    """Random and mutated inputs to this parser end in a parse or our own refusal, in time."""
    _run(target, _examples(target, 300))


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_parser_long_fuzz(target: Target) -> None:
    """The same property over many more inputs (the slow tier)."""
    _run(target, _examples(target, 3000))
