"""The shared checker itself: it must see each broken invariant, or a green fault suite means nothing."""

from __future__ import annotations

import asyncio

from adapters.discord.sink import DISCORD_STREAMING_INDICATOR
from core.chat_api import CONTINUE_PROMPT
from core.engine import APOLOGY_UNAVAILABLE, INTERRUPTED_NOTE
from tests.fakes.chat_api import Behaviour, RecordedRequest, default_reply
from tests.reliability.invariants import (
    ALIVE,
    ISOLATED,
    NO_CURSOR,
    NO_SECRET,
    NOTHING_LOST,
    ONE_REPLY,
    Sent,
    check,
)

TOKEN, OTHER = "convAx001q-turn0", "convAx002q-turn1"


def request(*messages: tuple[str, str]) -> RecordedRequest:
    body = {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}
    return RecordedRequest("POST", "/v1/chat/completions", {}, body, "m", 0.0, asyncio.Event(),
                           behaviour=Behaviour())


ASK = request(("system", "s"), ("user", f"{TOKEN} hi"))
ANSWER = default_reply(ASK.body)


def sent(*replies: str) -> Sent:
    return Sent("discord", "convAx001q", TOKEN, f"{TOKEN} hi", replies=list(replies))


class TestChecker:
    """Each invariant, kept and broken."""

    def test_answers_splits_notes_and_apologies_pass(self) -> None:
        """A whole answer, the same answer split in two, an interrupted prefix and an apology."""
        cut = ANSWER[:30]
        continuation = request(("user", f"{TOKEN} hi"), ("assistant", cut), ("user", CONTINUE_PROMPT))
        report = check([sent(ANSWER), sent(ANSWER[:20], ANSWER[20:]), sent(cut + "\n\n" + INTERRUPTED_NOTE),
                        sent(APOLOGY_UNAVAILABLE), sent(cut + default_reply(continuation.body))],
                       [ASK, continuation], alive=True)
        report.assert_clean()
        assert dict(report.outcomes) == {"answered": 2, "interrupted": 1, "apology": 1, "continued": 1}

    def test_each_violation_is_seen(self) -> None:
        """Nothing shown, a cursor left, a lost or doubled part, a foreign conversation in a request,
        a secret in a log line, a dead bot."""
        leaky = request(("user", "convAx002q earlier"), ("user", f"{TOKEN} hi"))
        other = Sent("discord", "convAx002q", OTHER, f"{OTHER} x", replies=[APOLOGY_UNAVAILABLE])
        report = check(
            [sent(), sent(ANSWER + DISCORD_STREAMING_INDICATOR), sent(ANSWER[:10], ANSWER[11:]),
             sent(ANSWER, ANSWER), other],
            [ASK, leaky], alive=False, log_text='{"event": "x sk-secret-123"}\n', secrets=["sk-secret-123"],
        )
        assert report.violations == {ONE_REPLY: 2, NO_CURSOR: 1, NOTHING_LOST: 1, ISOLATED: 1, NO_SECRET: 1,
                                     ALIVE: 1}
