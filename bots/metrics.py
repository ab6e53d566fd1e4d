"""Prometheus metrics of one process, served at GET /metrics. Implements `core.ports.TurnObserver`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 40, 60, 120, 180)  # whole replies, up to the total deadline


class Metrics:
    """Counters and gauges in a registry of their own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.turns = Counter("lunos_turns", "Turns handled, by bot and outcome", ["bot", "status"],
                             registry=self.registry)
        self.turn_seconds = Histogram("lunos_turn_seconds", "Time to answer a turn", ["bot"],
                                      buckets=LATENCY_BUCKETS_S, registry=self.registry)
        self.fallbacks = Counter("lunos_fallbacks", "Replies answered by a fallback model", ["bot"],
                                 registry=self.registry)
        self.bot_ready = Gauge("lunos_bot_ready", "1 when the bot is connected and ready", ["bot"],
                               registry=self.registry)
        self.redis_up = Gauge("lunos_redis_up", "1 when Redis answered the last health check",
                              registry=self.registry)

    def turn_finished(self, bot: str, status: str, model: str | None, latency_s: float,
                      fallback_used: bool) -> None:
        self.turns.labels(bot=bot, status=status).inc()
        if status in ("answered", "interrupted", "failed"):
            self.turn_seconds.labels(bot=bot).observe(latency_s)
        if fallback_used:
            self.fallbacks.labels(bot=bot).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
