"""Where the metrics of `bots.metrics` are measured, at the composition root, around the engine, the
chat client and each platform's HTTP client — so `core` and the adapters stay free of Prometheus.

- `InstrumentedEngine` is a `ConversationEngine` that times each turn: it counts the turn in flight,
  wraps the adapter's sink in a `MeasuredSink` (when the first text and the final text were shown)
  and, once the turn is over, reports latency, fallbacks and tokens.
- `TimedChatClient` is the process's `ChatClient`; within a turn it notes the first token, the end
  of the model's answer and each failed attempt on that turn's `TurnTiming` (a context variable, so
  one client serves every bot).
- Platform calls are counted by the adapters' own counters (`adapters.slack.calls`,
  `adapters.discord.calls`), into `Metrics.platform_call`.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from bots.metrics import Metrics
from core.chat_api import ChatClient, DeltaCallback
from core.engine import ConversationEngine, TurnOutcome
from core.errors import ChatAPIError, ChatTimeout
from core.ports import RenderLimits, ReplySink
from core.types import ChatMessage, ChatRequest, ChatResult, IncomingMessage, ReplyInfo


@dataclass
class TurnTiming:
    """What one turn's instruments saw; wall-clock seconds (`time.time`), like `received_at`."""

    bot: str
    received_at: float
    chat_started_at: float | None = None
    first_token_at: float | None = None
    model_done_at: float | None = None
    first_shown_at: float | None = None
    final_shown_at: float | None = None
    chat_errors: list[tuple[str, str]] = field(default_factory=list)  # (model, status)


CURRENT_TURN: contextvars.ContextVar[TurnTiming | None] = contextvars.ContextVar("lunos_turn", default=None)


def _status_of(exc: ChatAPIError) -> str:
    if exc.status is not None:
        return str(exc.status)
    if isinstance(exc, ChatTimeout):
        return "timeout"
    return "network" if "connection" in str(exc) else "stream"


class TimedChatClient(ChatClient):
    """The process's chat client, noting on the current turn's `TurnTiming` (when there is one) the
    first token, the end of the answer and every failed attempt."""

    async def stream(self, request: ChatRequest, on_delta: DeltaCallback) -> ChatResult:
        timing = CURRENT_TURN.get()
        if timing is None:
            return await super().stream(request, on_delta)
        timing.chat_started_at = time.time()

        async def first_token_noted(text: str) -> None:
            if timing.first_token_at is None:
                timing.first_token_at = time.time()
            await on_delta(text)

        try:
            return await super().stream(request, first_token_noted)
        finally:
            timing.model_done_at = time.time()

    async def _stream_once(self, request: ChatRequest, model: str, next_model: str | None,
                           messages: Sequence[ChatMessage], deliver: DeltaCallback, deadline: float) -> Any:
        # The one place every attempt passes, failed ones included (ChatClient recovers from them).
        try:
            return await super()._stream_once(request, model, next_model, messages, deliver, deadline)
        except ChatAPIError as exc:
            timing = CURRENT_TURN.get()
            if timing is not None:
                timing.chat_errors.append((model, _status_of(exc)))
            raise


class MeasuredSink:
    """The adapter's sink, passed through, noting when the first text and the final text were shown.
    Anything else the engine asks of a sink goes to the adapter's sink unchanged."""

    def __init__(self, sink: ReplySink, timing: TurnTiming) -> None:
        self._sink = sink
        self._timing = timing

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    @property
    def limits(self) -> RenderLimits:
        return self._sink.limits

    async def start(self) -> None:
        await self._sink.start()

    async def post(self, text: str) -> str:
        ref = await self._sink.post(text)
        self._shown(text)
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        await self._sink.edit(ref, text, final=final)
        self._shown(text)

    async def finish(self) -> None:
        # ReplyStream finishes a reply once every final state is on the platform.
        self._timing.final_shown_at = time.time()
        await self._sink.finish()

    def footer(self, info: ReplyInfo) -> str | None:
        return self._sink.footer(info)

    def _shown(self, text: str) -> None:
        if self._timing.first_shown_at is None and text.strip() and text != self._sink.limits.placeholder:
            self._timing.first_shown_at = time.time()


class InstrumentedEngine(ConversationEngine):
    """A `ConversationEngine` whose turns are measured into `metrics`."""

    def __init__(self, *args: Any, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics

    async def handle(self, message: IncomingMessage, sink: ReplySink) -> TurnOutcome:
        bot = self.profile.name
        timing = TurnTiming(bot=bot, received_at=message.received_at)
        token = CURRENT_TURN.set(timing)
        in_flight = self._metrics.replies_in_flight.labels(bot=bot)
        in_flight.inc()
        try:
            outcome = await super().handle(message, cast(ReplySink, MeasuredSink(sink, timing)))
        finally:
            in_flight.dec()
            CURRENT_TURN.reset(token)
        self._report(timing, outcome)
        return outcome

    def _report(self, timing: TurnTiming, outcome: TurnOutcome) -> None:
        metrics, bot = self._metrics, timing.bot
        for model, status in timing.chat_errors:
            metrics.chat_errors.labels(bot=bot, model=model, status=status).inc()
        if timing.chat_started_at is not None and timing.first_token_at is not None:
            first_token_s = timing.first_token_at - timing.chat_started_at
            metrics.first_token.labels(bot=bot).observe(max(0.0, first_token_s))
        if timing.first_shown_at is not None and timing.first_token_at is not None:
            # Only answers count: a refusal or a help text is shown without any model.
            added_s = timing.first_shown_at - timing.received_at
            metrics.added_latency.labels(bot=bot).observe(max(0.0, added_s))
        if timing.model_done_at is not None and timing.final_shown_at is not None and timing.first_token_at:
            metrics.final_lag.labels(bot=bot).observe(max(0.0, timing.final_shown_at - timing.model_done_at))
        result = outcome.result
        if result is None:
            return
        if result.fallback_used:
            metrics.fallbacks.labels(bot=bot, from_model=result.requested_model, to_model=result.model).inc()
        if result.usage is not None:
            app_id = self.profile.app_id
            tokens = metrics.tokens
            tokens.labels(app_id=app_id, model=result.model, kind="prompt").inc(result.usage.prompt_tokens)
            completion = result.usage.completion_tokens
            tokens.labels(app_id=app_id, model=result.model, kind="completion").inc(completion)
