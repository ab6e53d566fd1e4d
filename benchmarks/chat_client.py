"""Chat client parse rate: one 20k-character reply streamed in 4-character chunks through the real
`ChatClient` (httpx + httpx-sse + JSON per chunk) from the fake API, to a no-op callback.

The fake runs in its own process, so the rate is that of the slower of the two ends; the client's
own CPU time per chunk is reported alongside to tell them apart.
"""

from __future__ import annotations

import time

from benchmarks.harness import MODEL_C, Bench, Sizes
from benchmarks.report import Row, ms, percentile, rate
from core.types import ChatMessage, ChatRequest
from tests.fakes.chat_api import Behaviour

REPLY_CHARS = 20_000
CHUNK_CHARS = 4


async def run(bench: Bench, sizes: Sizes) -> list[Row]:
    """6. Chunks per second through `ChatClient.stream`."""
    assert bench.chat is not None
    text = ("The quick brown fox jumps over the lazy dog. " * (REPLY_CHARS // 45 + 1))[:REPLY_CHARS]
    chunks = -(-len(text) // CHUNK_CHARS)
    behaviour = Behaviour(text=text, ttft_s=0.0, token_delay_s=0.0, chunk_chars=CHUNK_CHARS)
    await bench.fake.script(MODEL_C, behaviour)
    request = ChatRequest(
        app_id="bench-app-1", model=MODEL_C, fallback_models=(),
        messages=(ChatMessage("system", "You are a benchmark bot."), ChatMessage("user", "go")),
        max_tokens=8000,
    )
    received = 0

    async def on_delta(piece: str) -> None:
        nonlocal received
        received += len(piece)

    await bench.chat.stream(request, on_delta)  # warm-up: connection, imports, caches
    durations: list[float] = []
    cpu: list[float] = []
    for _ in range(sizes.client_runs):
        received = 0
        cpu_started = time.process_time()
        started = time.perf_counter()
        result = await bench.chat.stream(request, on_delta)
        durations.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
        if result.text != text or received != len(text):
            raise AssertionError("chat client lost or changed text: the benchmark is invalid")

    p50 = percentile(durations, 50)
    cpu_per_chunk_us = percentile(cpu, 50) / chunks * 1e6
    row = Row(
        name="6. chat client SSE parse", n=sizes.client_runs, p50=ms(p50),
        p95=ms(percentile(durations, 95)), max=ms(max(durations)),
        result=f"{rate(chunks / p50, 'chunks')}, {cpu_per_chunk_us:.0f} µs CPU/chunk",
    )
    row.notes.append(
        f"{REPLY_CHARS:,}-char reply in {chunks:,} chunks of {CHUNK_CHARS} (TTFT 0, no delay), "
        "p50/p95/max are per-reply times; CPU/chunk is this process only (client side, incl. loop)"
    )
    return [row]
