"""Renderer throughput: the pure `StreamRenderer` fed a 100k-character answer in 4-character
deltas on a synthetic clock, with Discord-like limits (and Slack-like ones for comparison).

No event loop and no sink: this is the CPU cost the renderer adds to every delta of every stream.
"""

from __future__ import annotations

import time

from benchmarks.harness import DISCORD_LIKE_LIMITS, Sizes
from benchmarks.report import Row, Target, ms, percentile, rate
from core.ports import RenderLimits
from core.streaming import StreamRenderer

RENDERER_MIN_DELTAS_PER_S = 200_000
RENDERER_TARGET = Target(
    "RENDERER_MIN_DELTAS_PER_S", f"> {RENDERER_MIN_DELTAS_PER_S:,} deltas/s (p50 run)",
    "a renderer must never be the bottleneck of a stream",
)
ANSWER_CHARS = 100_000
DELTA_CHARS = 4
CLOCK_STEP_S = 0.01  # synthetic time between deltas: 100 deltas/s, so an edit falls due every 120
# Slack's shape (adapters/slack/sink.py): longer messages, so longer segments to rescan.
SLACK_LIKE_LIMITS = RenderLimits(
    max_chars=4000, split_chars=3500, min_edit_interval_s=1.2, placeholder="…", streaming_indicator=" ⚪"
)


def answer_text(chars: int = ANSWER_CHARS) -> str:
    """A deterministic markdown answer: paragraphs, a list and fenced code blocks."""
    prose = ("Streaming replies arrive as many small deltas. The renderer decides when to edit! "
             "Does it split cleanly at sentence ends? It should, most of the time. ")
    listing = "- first point of the list\n- second point, a little longer\n- third\n"
    code = ("```python\ndef handle(message: str) -> str:\n    words = message.split()\n"
            "    return ' '.join(reversed(words))\n```\n")
    parts: list[str] = []
    size, i = 0, 0
    while size < chars:
        block = prose * 3 + "\n\n" + (listing if i % 2 else "") + (code if i % 3 == 0 else "") + "\n"
        parts.append(block)
        size += len(block)
        i += 1
    return "".join(parts)[:chars]


def _run_once(deltas: list[str], limits: RenderLimits) -> tuple[float, int, StreamRenderer]:
    renderer = StreamRenderer(limits)
    now = 0.0
    started = time.perf_counter()
    ops = len(renderer.start(now))
    for delta in deltas:
        now += CLOCK_STEP_S
        ops += len(renderer.feed(delta, now))
    ops += len(renderer.finish(now))
    return time.perf_counter() - started, ops, renderer


def _bench(name: str, limits: RenderLimits, runs: int, target: Target | None) -> Row:
    text = answer_text()
    deltas = [text[i : i + DELTA_CHARS] for i in range(0, len(text), DELTA_CHARS)]
    _run_once(deltas, limits)  # warm-up
    durations: list[float] = []
    ops = 0
    segments = 0
    for _ in range(runs):
        seconds, ops, renderer = _run_once(deltas, limits)
        if renderer.text != text:
            raise AssertionError("renderer lost or changed text: the benchmark is invalid")
        durations.append(seconds)
        segments = len(renderer.segments)
    p50 = percentile(durations, 50)
    row = Row(name=name, n=runs, p50=ms(p50), p95=ms(percentile(durations, 95)), max=ms(max(durations)))
    row.result = rate(len(deltas) / p50, "deltas")
    if target is not None:
        row.target = target
        row.met = len(deltas) / p50 > RENDERER_MIN_DELTAS_PER_S
    row.notes.append(
        f"{len(text):,} chars in {len(deltas):,} deltas of {DELTA_CHARS}, limits {limits.max_chars}/"
        f"{limits.split_chars}, edit interval {limits.min_edit_interval_s:g} s, synthetic clock "
        f"+{CLOCK_STEP_S * 1000:g} ms/delta; {ops} ops emitted into {segments} messages per run; "
        f"p50/p95/max are per-run times; slowest run {rate(len(deltas) / max(durations), 'deltas')}"
    )
    return row


def run(sizes: Sizes) -> list[Row]:
    """4. Renderer throughput (Discord-like, with target) and 4b (Slack-like, for comparison)."""
    return [
        _bench("4. renderer, Discord-like 2000/1900", DISCORD_LIKE_LIMITS, sizes.renderer_runs,
               RENDERER_TARGET),
        _bench("4b. renderer, Slack-like 4000/3500", SLACK_LIKE_LIMITS, sizes.renderer_runs, None),
    ]
