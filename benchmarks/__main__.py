"""`python -m benchmarks [--quick]`: run every benchmark and print one table.

Timings are reported, never asserted: the exit status is 0 unless a benchmark crashed (then the
remaining ones still run, the traceback is printed and the status is 1).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from importlib import metadata
from urllib.parse import urlsplit

from benchmarks import chat_client, memory, renderer, reply_latency
from benchmarks.harness import FULL, QUICK, Bench, Sizes, redis_url
from benchmarks.report import Row, render_table

Suite = Callable[[Bench, Sizes], Awaitable[list[Row]]]


async def _renderer(bench: Bench, sizes: Sizes) -> list[Row]:
    return renderer.run(sizes)


SUITES: tuple[tuple[str, Suite], ...] = (
    ("first visible text", reply_latency.first_text_overhead),
    ("concurrency", reply_latency.concurrent_first_text),
    ("burst on the production Redis pool", reply_latency.production_pool_burst),
    ("same-conversation ordering", reply_latency.same_conversation_ordering),
    ("renderer", _renderer),
    ("memory", memory.run),
    ("chat client", chat_client.run),
)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path}"


def _load() -> str:
    """1/5/15-minute load average: other work on the host skews every figure below."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def _environment(bench: Bench, redis_version: str, mode: str) -> str:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    names = ("httpx", "httpx-sse", "redis", "aiohttp", "structlog")
    packages = ", ".join(f"{p} {_version(p)}" for p in names)
    return "\n".join([
        f"lunos-bots benchmarks ({mode})",
        f"python   {platform.python_implementation()} {platform.python_version()} on {platform.platform()}",
        f"cpus     {os.cpu_count()} (usable: {affinity}); load average {_load()}; "
        "fake chat API in a child process",
        f"redis    {redis_version} at {_safe_url(redis_url())}, key prefix {bench.keys.prefix}",
        f"packages {packages}",
    ])


async def _main(sizes: Sizes, mode: str) -> int:
    rows: list[Row] = []
    crashed: list[str] = []
    started = time.perf_counter()
    async with Bench() as bench:
        print(_environment(bench, await bench.redis_version(), mode), flush=True)
        print(flush=True)
        for name, suite in SUITES:
            suite_started = time.perf_counter()
            print(f"running {name} …", file=sys.stderr, flush=True)
            try:
                rows.extend(await suite(bench, sizes))
            except Exception:
                crashed.append(name)
                traceback.print_exc()
            print(f"  {name}: {time.perf_counter() - suite_started:.1f} s", file=sys.stderr, flush=True)
    print(render_table(rows))
    print()
    print(f"total {time.perf_counter() - started:.1f} s; load average {_load()}; "
          f"deleted {bench.deleted_keys} Redis keys under {bench.keys.prefix}:*")
    if crashed:
        print(f"CRASHED: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs: the whole suite in < 30 s")
    args = parser.parse_args(argv)
    sizes, mode = (QUICK, "quick") if args.quick else (FULL, "full")
    return asyncio.run(_main(sizes, mode))


if __name__ == "__main__":
    sys.exit(main())
