"""Chat API faults aimed at chosen conversations, through `FakeChatAPI.chooser`.

A `ChatFault` turns one request into a `Behaviour` (or None: the fake's normal stream), knowing the
model asked and which attempt at this user message on this model it is. `aim` installs a fault for
the conversations of a workload it picks, so faulted and healthy conversations run side by side.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from tests.fakes.chat_api import Behaviour, FakeChatAPI, RecordedRequest, default_reply
from tests.reliability.harness import MODEL_A, Workload
from tests.reliability.invariants import asked_text

SHORT_ANSWER_CHARS = 1000  # below this an answer dies halfway; above it just before its end


@dataclass(frozen=True)
class Ask:
    """One request, as a fault sees it."""

    model: str | None
    attempt: int  # 1 for the first request for this user message to this model
    answer: str  # what the fake would stream for it
    total_failure: bool  # the conversation is one where every model fails


ChatFault = Callable[[Ask], Behaviour | None]


def _die_point(answer: str) -> int:
    # Long answers die just before their end, past the platform's split, so the continuation has
    # to join a reply that already spans two messages.
    return len(answer) - 100 if len(answer) > SHORT_ANSWER_CHARS else len(answer) // 2


def http_status(status: int, *, retry_after: float | None = None, first_attempt_only: bool = False,
                every_model: bool = False) -> ChatFault:
    def fault(ask: Ask) -> Behaviour | None:
        if first_attempt_only and ask.attempt > 1:
            return None
        if ask.model == MODEL_A or every_model or ask.total_failure:
            return Behaviour(kind="status", status=status, retry_after=retry_after)
        return None
    return fault


def hang(ask: Ask) -> Behaviour | None:
    return Behaviour(kind="hang") if ask.model == MODEL_A or ask.total_failure else None


def die_mid_stream(ask: Ask) -> Behaviour | None:
    if ask.model == MODEL_A:
        return Behaviour(kind="die", die_after_chars=_die_point(ask.answer), chunk_chars=24)
    if ask.total_failure:  # the continuation dies before its first token: the answer is interrupted
        return Behaviour(kind="die", die_after_chars=0)
    return None


def garbage_line(ask: Ask) -> Behaviour | None:
    if ask.model == MODEL_A:
        return Behaviour(kind="garbage", die_after_chars=_die_point(ask.answer), chunk_chars=24)
    return None


def inband_error(ask: Ask) -> Behaviour | None:
    if ask.model == MODEL_A:
        # Half the time before any text (a clean fallback), half after (a continuation).
        cut = 0 if ask.total_failure else _die_point(ask.answer)
        return Behaviour(kind="inband_error", die_after_chars=cut, chunk_chars=24)
    return None


CHAT_FAULTS: dict[str, ChatFault] = {
    "http_500": http_status(500),
    "http_503_retry_after": http_status(503, retry_after=0.1, first_attempt_only=True),
    "http_429_retry_after": http_status(429, retry_after=0.2, first_attempt_only=True),
    "hang_before_first_token": hang,
    "death_mid_stream": die_mid_stream,
    "garbage_sse_line": garbage_line,
    "inband_error_event": inband_error,
    "http_401": http_status(401, every_model=True),
}


def aim(api: FakeChatAPI, workload: Workload, fault: ChatFault, faulted: Collection[int],
        total_failure: Collection[int] = ()) -> None:
    """Apply `fault` to the requests of conversations `faulted` (`total_failure` ⊆ them: every model)."""
    markers = {workload.marker(i): i for i in faulted}
    doomed = {workload.marker(i) for i in total_failure}

    def choose(record: RecordedRequest) -> Behaviour | None:
        asked = asked_text(record)
        marker = next((m for m in markers if m in asked), None)
        if marker is None:
            return None
        attempt = sum(1 for r in api.requests if r.model == record.model and asked_text(r) == asked)
        return fault(Ask(record.model, attempt, default_reply(record.body), marker in doomed))

    api.chooser = choose
