"""Memory per in-flight reply: tracemalloc peak while N replies stream at once through the real
engine, divided by N.

Replies are held open by the fake API (a time to first token, then slow chunks), so all of them
are in flight together. tracemalloc sees Python allocations of this process only: the fake API
runs in its own process, and kernel socket buffers are not counted.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from dataclasses import dataclass, field

from benchmarks.harness import MODEL_A, Bench, Sizes, conversation, incoming, timed_sink
from benchmarks.report import Row, Target, percentile
from core.engine import ConversationEngine
from tests.fakes.chat_api import Behaviour

MEMORY_MAX_KIB_PER_REPLY = 64
MEMORY_TARGET = Target(
    "MEMORY_MAX_KIB_PER_REPLY", f"< {MEMORY_MAX_KIB_PER_REPLY} KiB/reply (p50 round)",
    "one process serves many bots and channels",
)
# Under tracemalloc, starting a reply costs the loop ~20 ms of CPU, so the last of N replies shows
# text ~N x 20 ms after the first: each must stay open longer than that for all to be in flight.
HOLD_TTFT_S = 0.3
HOLD_S_PER_REPLY = 0.0225  # open time after the first text, per reply started together
HOLD_CHUNK_CHARS = 125  # 4 chunks: the hold is spread over the 3 gaps between them
REPLY = ("Memory per reply is what a process pays for each conversation it is answering at once. ") * 6
REPLY = REPLY[:500]
IN_FLIGHT_WAIT_S = 60.0
# Allocation sites (the file that allocated, one frame) grouped for the in-flight breakdown.
SITE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core/", ("/core/",)),
    ("test sinks+bench", ("/tests/fakes/", "/benchmarks/")),
    ("httpx/httpcore/h11/anyio/sse", ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/httpx_sse/")),
    ("redis", ("/redis/",)),
    ("structlog", ("/structlog/",)),
)


@dataclass
class _Round:
    in_flight: int  # replies that had shown text and were not final when sampled
    in_flight_bytes: int  # traced memory above the baseline at that moment
    peak_bytes: int  # traced peak above the baseline over the whole round
    failures: int
    degraded: int
    sites: dict[str, int] = field(default_factory=dict)  # bytes per SITE_GROUPS name, when sampled


def _group(filename: str) -> str:
    for name, needles in SITE_GROUPS:
        if any(needle in filename for needle in needles):
            return name
    return "asyncio/stdlib/other"


def _sites(snapshot: tracemalloc.Snapshot, baseline: tracemalloc.Snapshot) -> dict[str, int]:
    not_ours = [tracemalloc.Filter(False, tracemalloc.__file__)]  # snapshots trace themselves
    grouped: dict[str, int] = {}
    for stat in snapshot.filter_traces(not_ours).compare_to(baseline.filter_traces(not_ours), "filename"):
        name = _group(stat.traceback[0].filename)
        grouped[name] = grouped.get(name, 0) + stat.size_diff
    return grouped


async def _one_round(engine: ConversationEngine, n: int, tag: str, *, breakdown: bool = False) -> _Round:
    """Start n replies, sample memory once all show text (all still streaming), then finish them."""
    gc.collect()
    # Kept until the round ends, so the baseline includes it throughout.
    base_snapshot = tracemalloc.take_snapshot() if tracemalloc.is_tracing() and breakdown else None
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    sinks = [timed_sink() for _ in range(n)]
    tasks = [
        asyncio.create_task(engine.handle(incoming(conversation(f"mem-{tag}-{i}"), f"hi {i}"), s.sink))
        for i, s in enumerate(sinks)
    ]
    try:
        async with asyncio.timeout(IN_FLIGHT_WAIT_S):
            await asyncio.gather(*(s.first_text.wait() for s in sinks))
    except TimeoutError:
        pass  # reported through the in-flight count
    in_flight = sum(1 for s in sinks if s.first_text.at is not None and s.finished.at is None)
    current, peak = tracemalloc.get_traced_memory()
    sites: dict[str, int] = {}
    if base_snapshot is not None:
        snapshot = tracemalloc.take_snapshot()  # its own allocations must not count as a peak
        sites = _sites(snapshot, base_snapshot)
        del snapshot
        gc.collect()
        tracemalloc.reset_peak()
    outcomes = await asyncio.gather(*tasks)
    peak = max(peak, tracemalloc.get_traced_memory()[1])
    del base_snapshot
    failures = sum(1 for o in outcomes if o.status != "answered")
    degraded = sum(1 for o in outcomes if o.degraded)
    return _Round(in_flight, current - baseline, peak - baseline, failures, degraded, sites)


async def run(bench: Bench, sizes: Sizes) -> list[Row]:
    """5. KiB per concurrent in-flight reply."""
    engine = bench.engine()
    n = sizes.memory_replies
    await bench.fake.script(MODEL_A, Behaviour(text=REPLY, chunk_chars=HOLD_CHUNK_CHARS))
    await _one_round(engine, n, "warmup")  # opens the HTTP and Redis connection pools, untraced, fast

    token_delay_s = n * HOLD_S_PER_REPLY / (-(-len(REPLY) // HOLD_CHUNK_CHARS) - 1)
    await bench.fake.script(MODEL_A, Behaviour(
        text=REPLY, ttft_s=HOLD_TTFT_S, token_delay_s=token_delay_s, chunk_chars=HOLD_CHUNK_CHARS
    ))
    rounds: list[_Round] = []
    round_seconds: list[float] = []
    retained_kib: list[float] = []
    tracemalloc.start()
    try:
        for round_no in range(sizes.memory_rounds):
            started = time.perf_counter()
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            rounds.append(await _one_round(engine, n, str(round_no), breakdown=round_no == 0))
            round_seconds.append(time.perf_counter() - started)
            gc.collect()
            retained_kib.append((tracemalloc.get_traced_memory()[0] - before) / n / 1024)
    finally:
        tracemalloc.stop()
    per_reply_kib = [r.peak_bytes / n / 1024 for r in rounds]
    in_flight_kib = [r.in_flight_bytes / n / 1024 for r in rounds]
    failures = sum(r.failures for r in rounds)

    p50 = percentile(per_reply_kib, 50)
    row = Row(
        name=f"5. memory, {n} replies in flight", n=n * sizes.memory_rounds,
        p50=f"{p50:.1f} KiB", p95=f"{percentile(per_reply_kib, 95):.1f} KiB",
        max=f"{max(per_reply_kib):.1f} KiB",
        result=f"{p50:.1f} KiB/reply", target=MEMORY_TARGET,
        met=p50 < MEMORY_MAX_KIB_PER_REPLY and failures == 0,
    )
    row.notes.append(
        f"(tracemalloc peak − baseline) / {n}, per round ({sizes.memory_rounds} round(s)); replies "
        f"{len(REPLY)} chars, TTFT {HOLD_TTFT_S:g} s then {HOLD_CHUNK_CHARS}-char chunks every "
        f"{token_delay_s * 1000:.0f} ms; still streaming when all had shown text: "
        + ", ".join(f"{r.in_flight}/{n}" for r in rounds)
    )
    row.notes.append(
        "in flight (all showing text, none final): "
        + ", ".join(f"{k:.1f} KiB/reply" for k in in_flight_kib)
        + "; by allocating file, round 1: "
        + ", ".join(f"{name} {size / n / 1024:.1f}" for name, size in
                    sorted(rounds[0].sites.items(), key=lambda item: -item[1]))
    )
    row.notes.append(
        "includes everything a reply holds while open: task, ReplyStream + renderer, httpx stream, "
        "Redis lock, history, RecordingSink's call log; a warm-up round opened the connection pools"
    )
    row.notes.append(
        "retained after the round (gc'd): "
        + ", ".join(f"{k:.2f} KiB/reply" for k in retained_kib)
        + "; round times under tracemalloc: " + ", ".join(f"{s:.1f} s" for s in round_seconds)
    )
    if any(r.in_flight < n for r in rounds):
        row.notes.append("not every reply was in flight at once: the figure understates the cost")
    if failures:
        row.notes.append(f"{failures} replies did not answer (counted as a MISS)")
    degraded = sum(r.degraded for r in rounds)
    if degraded:
        row.notes.append(f"{degraded} replies skipped Redis (degraded): less state than a healthy turn")
    return [row]
