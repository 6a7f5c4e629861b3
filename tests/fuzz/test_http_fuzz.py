"""The HTTP fuzz campaign's CI-sized subset (bench/httpfuzz.py runs 100,000 in its long mode): seeded
random unauthenticated requests never get a 5xx and the server still answers afterwards."""

from __future__ import annotations

import pytest

from bench.httpfuzz import campaign


@pytest.mark.parametrize("seed", [11, 12])
async def test_no_unauthenticated_input_gets_a_5xx(seed: int) -> None:
    report = await campaign(1500, seed)
    assert report["requests"] >= 1500
    assert report["five_xx"] == [], report["five_xx"]
    assert report["alive_after"]
    # The campaign reached every kind of answer it aims at, not only the parser's 400s.
    assert {"200", "400", "401", "431"} <= set(report["statuses"]), report["statuses"]
