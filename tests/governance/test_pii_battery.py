"""Personal-data batteries through ``govern``: recall and precision overall, per kind and per channel.

Battery A was written before the recognizers were tuned (first score: recall 0.933, precision 0.993, most
misses being battery mistakes: GB/NL IBANs without their bank-code letters). Battery B was written after
that tuning (first score: recall 0.932, precision 0.979) and then prompted more fixes, so battery C was
written last, independently, and scored once before the fixes it prompted (recall 0.953, precision 0.986;
its remaining misses are its own mistakes: a Bitcoin address with a bad checksum, emails at the reserved
``.example`` suffix). All three must reach 0.95 overall."""

from __future__ import annotations

import pytest

from .. import _pii_battery_a as battery_a
from .. import _pii_battery_b as battery_b
from .. import _pii_battery_c as battery_c
from .._pii_eval import score


@pytest.mark.parametrize("battery", [battery_a, battery_b, battery_c], ids=["A", "B", "C"])
def test_battery_recall_and_precision(battery, capsys: pytest.CaptureFixture[str]) -> None:
    items = battery.items()
    assert len(items) >= 300 and len({k for k, _, _ in items}) >= 10 and len(battery.BENIGN) >= 100
    result = score(items, battery.BENIGN)
    with capsys.disabled():
        per = ", ".join(f"{k} {h}/{n}" for k, (h, n) in result["per"].items())
        print(
            f"\n{battery.__name__}: recall {result['recall']:.3f} precision {result['precision']:.3f}; {per}"
        )
    assert result["recall"] >= 0.95, result["misses"][:10]
    assert result["precision"] >= 0.95, result["benign_changed"][:10]
    for key, (hit, total) in result["per"].items():
        assert hit / total >= 0.75, (key, result["misses"][:10])  # C's crypto: 15/20 (its bad checksum)


def test_the_fast_path_gives_the_same_outputs_as_the_unoptimised_one() -> None:
    """The prefilter, the per-kind gate and the cache change no output on any battery (benign text too)."""
    import json

    from ximgctx.governance import govern, pii

    from .._pii_eval import CHANNELS, _post
    from . import _pii_battery_d as battery_d

    posts = []
    for battery in (battery_a, battery_b, battery_c, battery_d):
        strings = [t.format(v) for _, v, t in battery.items()] + list(battery.BENIGN)
        posts += [_post(len(posts) + i, CHANNELS[i % len(CHANNELS)], s) for i, s in enumerate(strings)]
    key = b"f" * 32
    fast = govern(posts, key=key)
    with pii.unoptimised():
        slow = govern(posts, key=key)
    assert fast.audit.redactions == slow.audit.redactions and sum(fast.audit.redactions.values()) > 500
    for a, b in zip(fast.posts, slow.posts, strict=True):
        assert json.dumps(a.to_dict(), sort_keys=True) == json.dumps(b.to_dict(), sort_keys=True), a.id


def test_unseen_battery_d(capsys: pytest.CaptureFixture[str]) -> None:
    """Battery D: written after the recognizers of issue 24 were done and scored once. First score (the
    one reported): recall 0.985, precision 0.995; misses two IPs after "my server" (read as a version, fixed
    after the score, test_pii_scripts) and "Avenue NW"'s quadrant; "Lotto numbers 4 11 23 35 42 49" read
    as a phone. The thresholds are the issue's."""
    from . import _pii_battery_d as battery_d

    items = battery_d.items()
    assert len(items) >= 190 and len({k for k, _, _ in items}) == 12 and len(battery_d.BENIGN) >= 100
    result = score(items, battery_d.BENIGN)
    with capsys.disabled():
        per = ", ".join(f"{k} {h}/{n}" for k, (h, n) in result["per"].items())
        print(f"\nbattery D: recall {result['recall']:.3f} precision {result['precision']:.3f}; {per}")
        print("misses:", result["misses"][:40])
        print("benign changed:", result["benign_changed"][:40])
    assert result["recall"] >= 0.95, result["misses"][:10]
    assert result["precision"] >= 0.97, result["benign_changed"][:10]
