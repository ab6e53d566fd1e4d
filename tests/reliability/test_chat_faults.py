"""Chat API faults while several conversations stream at once, on Slack and on Discord: what users
see keeps every invariant, and each fault ends the way it should (fallback, continuation, apology)."""

from __future__ import annotations

import io
from collections import Counter

import pytest

from core.engine import APOLOGY_BAD_KEY, APOLOGY_UNAVAILABLE
from tests.fakes.chat_api import FakeChatAPI
from tests.reliability.conftest import SideFactory
from tests.reliability.faults import CHAT_FAULTS, aim
from tests.reliability.harness import SECRETS, Workload, converse
from tests.reliability.invariants import check

CONVERSATIONS = 6
FAULTED = (0, 1, 3)  # 0 and 3 send long messages (replies split in two); 2, 4 and 5 stay healthy
TOTAL_FAILURE = (0,)  # where the fault hits every model
WAVES = 2  # the second turn of each conversation also reads the history the first one saved

# What the six conversations get in one wave, per fault.
EXPECTED: dict[str, dict[str, int]] = {
    "http_500": {"answered": 5, "apology": 1},
    "http_503_retry_after": {"answered": 6},
    "http_429_retry_after": {"answered": 6},
    "hang_before_first_token": {"answered": 5, "apology": 1},
    "death_mid_stream": {"answered": 3, "continued": 2, "interrupted": 1},
    "garbage_sse_line": {"answered": 3, "continued": 3},
    "inband_error_event": {"answered": 4, "continued": 2},
    "http_401": {"answered": 3, "apology": 3},
}
APOLOGY: dict[str, str] = {"http_500": APOLOGY_UNAVAILABLE, "hang_before_first_token": APOLOGY_UNAVAILABLE,
                           "http_401": APOLOGY_BAD_KEY}


@pytest.mark.parametrize("platform", ["slack", "discord"])
@pytest.mark.parametrize("fault", sorted(CHAT_FAULTS))
class TestChatFaults:
    """One chat API fault aimed at three of six concurrent conversations, two turns each."""

    async def test_invariants_hold(self, fault: str, platform: str, open_side: SideFactory,
                                   fault_api: FakeChatAPI, captured_logs: io.StringIO) -> None:
        """Every message gets one final reply of the expected kind, nothing is lost, duplicated or
        leaked, and the bot is still up."""
        workload = Workload(platform, CONVERSATIONS)
        aim(fault_api, workload, CHAT_FAULTS[fault], FAULTED, TOTAL_FAILURE)
        async with open_side(platform) as side:
            sent = await converse(side, workload, WAVES)
            alive = side.alive
        report = check(sent, fault_api.requests, alive=alive, log_text=captured_logs.getvalue(),
                       secrets=SECRETS)
        report.assert_clean()
        assert report.outcomes == Counter({k: v * WAVES for k, v in EXPECTED[fault].items()})
        apologies = {s.replies[0] for s in sent if len(s.replies) == 1 and s.replies[0].startswith("Sorry")}
        assert apologies <= {APOLOGY.get(fault)}
