"""Prometheus metrics of one process, served at GET /metrics. Implements `core.ports.TurnObserver`.

Every metric the service exports is created here; README "Operations" lists them and
`deploy/grafana/lunos-bots.json` charts them (a test checks every panel names one of `EXPORTED`).
The measurements themselves are taken in `bots.instrumentation` and reported here.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.feedback import AnswerRecord, Vote
from core.redis_circuit import RedisCircuit
from core.write_behind import WriteBehind

LATENCY_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 180)  # whole replies, up to the total deadline
# First token and first visible text: a model answers in 0.3–3 s, a slow one or a fallback in up to
# the first-token deadline (20 s) and beyond.
FIRST_TEXT_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 8, 13, 20, 40)
# The model's last token → the final text on the platform: an edit's round trip, or the wait for
# the workspace's / channel's edit budget under load.
FINAL_LAG_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)

# Every metric name /metrics exposes (counters with their `_total` suffix), for the dashboard test.
EXPORTED = frozenset({
    "lunos_turns_total", "lunos_turn_seconds", "lunos_fallbacks_total", "lunos_bot_ready", "lunos_redis_up",
    "lunos_time_to_first_token_seconds", "lunos_added_latency_seconds", "lunos_final_text_lag_seconds",
    "lunos_chat_api_errors_total", "lunos_platform_calls_total", "lunos_platform_rate_limited_total",
    "lunos_tokens_total", "lunos_limit_refusals_total", "lunos_redis_errors_total",
    "lunos_redis_circuit_open", "lunos_replies_in_flight", "lunos_journal_replies_total",
    "lunos_write_behind_waiting", "lunos_write_behind_dropped_total", "lunos_feedback_votes_total",
})


class _RedisCollector(Collector):
    """Redis errors and circuit state, read from the circuit every store shares, at scrape time."""

    def __init__(self) -> None:
        self.circuit: RedisCircuit | None = None
        self.write_behind: WriteBehind | None = None

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        buffer = self.write_behind
        waiting = GaugeMetricFamily("lunos_write_behind_waiting",
                                    "Writes (history appends, usage counts) waiting for Redis to answer")
        waiting.add_metric([], float(len(buffer)) if buffer is not None else 0.0)
        yield waiting
        dropped = CounterMetricFamily("lunos_write_behind_dropped",
                                      "Writes lost because Redis stayed down past the buffer's bound")
        dropped.add_metric([], float(buffer.dropped) if buffer is not None else 0.0)
        yield dropped
        circuit = self.circuit
        errors = CounterMetricFamily("lunos_redis_errors", "Redis calls that failed (each opens the circuit)")
        errors.add_metric([], float(getattr(circuit, "failures", 0)))
        yield errors
        state = GaugeMetricFamily("lunos_redis_circuit_open",
                                  "1 while Redis is skipped after a failure (stores degrade), else 0")
        state.add_metric([], 1.0 if circuit is not None and circuit.is_open else 0.0)
        yield state


class Metrics:
    """Counters, gauges and histograms in a registry of their own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.turns = Counter("lunos_turns", "Turns handled, by bot and outcome", ["bot", "status"],
                             registry=r)
        self.turn_seconds = Histogram("lunos_turn_seconds", "Time to answer a turn", ["bot"],
                                      buckets=LATENCY_BUCKETS_S, registry=r)
        self.fallbacks = Counter("lunos_fallbacks", "Replies answered by a fallback model, from the model "
                                 "asked to the one that answered", ["bot", "from_model", "to_model"],
                                 registry=r)
        self.bot_ready = Gauge("lunos_bot_ready", "1 when the bot is connected and ready", ["bot"],
                               registry=r)
        self.redis_up = Gauge("lunos_redis_up", "1 when Redis answered the last readiness check", registry=r)
        self.first_token = Histogram(
            "lunos_time_to_first_token_seconds",
            "Chat request sent → first answer token (reasoning excluded, fallbacks included)",
            ["bot"], buckets=FIRST_TEXT_BUCKETS_S, registry=r)
        self.added_latency = Histogram(
            "lunos_added_latency_seconds", "Platform event → first text the user sees", ["bot"],
            buckets=FIRST_TEXT_BUCKETS_S, registry=r)
        self.final_lag = Histogram(
            "lunos_final_text_lag_seconds", "Model's last token → the final text shown on the platform",
            ["bot"], buckets=FINAL_LAG_BUCKETS_S, registry=r)
        self.chat_errors = Counter(
            "lunos_chat_api_errors", "Failed chat-API attempts by HTTP status (or timeout, network, stream)",
            ["bot", "model", "status"], registry=r)
        self.platform_calls = Counter("lunos_platform_calls", "Platform API calls by method and status",
                                      ["bot", "platform", "method", "status"], registry=r)
        self.platform_rate_limited = Counter("lunos_platform_rate_limited", "Platform 429 answers by method",
                                             ["bot", "platform", "method"], registry=r)
        self.tokens = Counter("lunos_tokens", "Tokens the chat API reported, by app ID, model and kind",
                              ["app_id", "model", "kind"], registry=r)
        self.limit_refusals = Counter("lunos_limit_refusals", "Turns refused by a [limits] limit",
                                      ["bot", "limit"], registry=r)
        self.replies_in_flight = Gauge("lunos_replies_in_flight", "Turns being answered right now", ["bot"],
                                       registry=r)
        self.journal_outcomes = Counter(
            "lunos_journal_replies", "Replies the reply journal took over from a dead or stuck owner, by "
            "outcome: finalised, retrying (the platform refused, tried again later), abandoned (given up)",
            ["bot", "outcome"], registry=r)
        self.feedback_votes = Counter(
            "lunos_feedback_votes", "👍 / 👎 on answers, by app ID, model, vote (up, down) and change "
            "(added, removed); net votes = added − removed",
            ["app_id", "model", "vote", "change"], registry=r)
        self._redis = _RedisCollector()
        r.register(self._redis)

    def watch_write_behind(self, buffer: WriteBehind) -> None:
        """Report the writes a Redis outage holds back, and those it cost."""
        self._redis.write_behind = buffer

    def watch_redis(self, circuit: RedisCircuit) -> None:
        """Report the errors and state of the circuit every Redis store of the process shares."""
        self._redis.circuit = circuit

    # -- `core.ports.TurnObserver` ----------------------------------------------------------

    def turn_finished(self, bot: str, status: str, model: str | None, latency_s: float,
                      fallback_used: bool) -> None:
        self.turns.labels(bot=bot, status=status).inc()
        if status in ("answered", "interrupted", "failed", "deferred"):
            self.turn_seconds.labels(bot=bot).observe(latency_s)

    # -- reported by `bots.instrumentation` -------------------------------------------------

    def journal_outcome(self, bot: str, outcome: str) -> None:
        """`core.journal.JournalSweeper`'s `on_outcome`."""
        self.journal_outcomes.labels(bot=bot, outcome=outcome).inc()

    def feedback_vote(self, record: AnswerRecord, vote: Vote, added: bool) -> None:
        """`core.feedback.RedisFeedback`'s `on_vote`."""
        self.feedback_votes.labels(app_id=record.app_id, model=record.model, vote=vote.value,
                                   change="added" if added else "removed").inc()

    def limit_refused(self, bot: str, limit: str) -> None:
        self.limit_refusals.labels(bot=bot, limit=limit).inc()

    def platform_call(self, bot: str, platform: str, method: str, status: int | str) -> None:
        self.platform_calls.labels(bot=bot, platform=platform, method=method, status=str(status)).inc()
        if status == 429:
            self.platform_rate_limited.labels(bot=bot, platform=platform, method=method).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
