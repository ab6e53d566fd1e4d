"""`python -m benchmarks [--quick] [--in-process] [--platform slack|discord]`: run the benchmarks
and print their tables.

By default: the real `lunos-bots run` process measured from outside at the fake platforms, one table
per platform, plots written under `--plots` (docs/img). `--in-process` runs the engine benchmarks
(the engine inside this process, into a recording sink) instead.

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
from pathlib import Path
from urllib.parse import urlsplit

from benchmarks import chat_client, memory, renderer, reply_latency
from benchmarks.harness import FULL, QUICK, Bench, Sizes, redis_url
from benchmarks.report import Row, render_measures, render_measures_markdown, render_table

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


def _revision() -> str:
    """The commit measured, and whether the working tree differed from it."""
    try:
        import subprocess

        described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                                   text=True, timeout=10, check=False).stdout.strip()
    except OSError:
        return "?"
    return described or "?"


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def _process_main(quick: bool, platforms: Sequence[str], plots: Path | None,
                        markdown: Path | None) -> int:
    from benchmarks import process_level, process_report
    from benchmarks.bot_process import PrivateRedis

    sizes = process_level.QUICK if quick else process_level.FULL
    started = time.perf_counter()
    load_before = _load()
    results: list[process_level.PlatformResult] = []
    crashed: list[str] = []
    async with PrivateRedis() as redis:
        chat, chat_url = await process_level.start_chat_api()
        try:
            for platform_name in platforms:
                _log(f"running {platform_name} …")
                try:
                    results.append(await process_level.run_platform(
                        platform_name, sizes, redis, chat, chat_url, log=_log))
                except Exception:
                    crashed.append(platform_name)
                    traceback.print_exc()
        finally:
            await chat.stop()
        redis_version = redis.version
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    header = "\n".join([
        f"lunos-bots process benchmarks ({'quick' if quick else 'full'}), "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"python   {platform.python_implementation()} {platform.python_version()} on {platform.platform()}",
        f"cpus     {os.cpu_count()} (usable: {affinity}); load average before {load_before}, after {_load()}",
        f"code     {_revision()}",
        f"redis    {redis_version}, private server on a free port (no other clients)",
        f"model    fake chat API: time to first token {process_level.TTFT_S * 1000:.0f} ms, then "
        f"{process_level.CHUNK_CHARS}-character chunks every {process_level.TOKEN_DELAY_S * 1000:.0f} ms, "
        f"{process_level.ANSWER_CHARS}-character answers",
        "processes bot (lunos-bots run), fake chat API, fake Slack or Discord, Redis, and this driver: "
        "each its own",
    ])
    print(header)
    tables = []
    for result in results:
        rows, notes = process_report.measures(result)
        title = f"{result.platform.capitalize()} (lunos-bots run, HTTP mode)" if result.platform == "slack" \
            else f"{result.platform.capitalize()} (lunos-bots run, gateway)"
        print()
        print(render_measures(title, rows, notes))
        tables.append(render_measures_markdown(title, rows, notes))
    if plots is not None and results:
        try:
            written = process_report.write_plots(results, plots)
            print()
            print("plots: " + ", ".join(str(p) for p in written))
        except ImportError:
            print("plots skipped: matplotlib is not installed (pip install -e '.[bench]')")
    if markdown is not None:
        text = "```\n" + header + "\n```\n\n" + "\n\n".join(tables) + "\n"
        markdown.write_text(text, encoding="utf-8")  # noqa: ASYNC240 (once, after the measurements)
        print(f"markdown tables: {markdown}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if crashed:
        print(f"CRASHED: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smaller runs (process level: 1, 50 and 200 concurrent, a few minutes)")
    parser.add_argument("--in-process", action="store_true",
                        help="the engine benchmarks inside this process instead of the real bot process")
    parser.add_argument("--platform", choices=("slack", "discord"), action="append",
                        help="process level: only this platform (repeatable; default both)")
    parser.add_argument("--plots", type=Path, default=Path("docs/img"),
                        help="process level: where to write the PNG plots (default docs/img)")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--markdown", type=Path, help="process level: also write the tables as Markdown here")
    args = parser.parse_args(argv)
    if args.in_process:
        sizes, mode = (QUICK, "quick") if args.quick else (FULL, "full")
        return asyncio.run(_main(sizes, mode))
    return asyncio.run(_process_main(args.quick, args.platform or ["slack", "discord"],
                                     None if args.no_plots else args.plots, args.markdown))


if __name__ == "__main__":
    sys.exit(main())
