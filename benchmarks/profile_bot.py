"""Profile the real bot process under a burst: `python -m benchmarks.profile_bot --platform slack
--level 200`. Needs py-spy (`pip install py-spy`; as root, or with ptrace allowed).

Starts the same processes as the process benchmarks, records the bot with `py-spy record
--nonblocking` (the bot is never paused) while `--rounds` bursts of `--level` conversations run, and
prints the functions with the most samples: own time (the frame on top of the stack) and total time
(anywhere on the stack), as file:function.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.bot_process import PrivateRedis
from benchmarks.process_level import PlatformBench, start_chat_api

PY_SPY_RATE_HZ = 200


def _frame_name(frame: str) -> str:
    """`handle (core/engine.py:128)` → `core/engine.py:handle`, site-packages paths shortened."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{path}:{name}"


def summarise(raw: Path, top: int) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(f) for f in stack.split(";") if "(" in f]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    idle = sum(c for name, c in own.items() if "select" in name.rsplit(":", 1)[1])
    out = [f"{samples} samples at {PY_SPY_RATE_HZ} Hz ({idle / max(samples, 1):.0%} idle in select/epoll)",
           "", "own time (top of stack):"]
    out += [f"  {c / samples:6.1%}  {name}" for name, c in own.most_common(top)]
    out += ["", "total time (anywhere on the stack), excluding the event loop's own frames:"]
    loop_frames = ("asyncio/", "<module>", "runpy", "bots/cli.py:main", "bots/cli.py:_main", "events.py:_run")
    useful = [(n, c) for n, c in total.most_common() if not any(m in n for m in loop_frames)]
    out += [f"  {c / samples:6.1%}  {name}" for name, c in useful[:top]]
    return "\n".join(out)


async def _run(platform: str, level: int, rounds: int, top: int, keep: Path | None) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    async with PrivateRedis() as redis:
        chat, chat_url = await start_chat_api()
        try:
            async with PlatformBench(platform, redis, chat, chat_url) as bench:
                assert bench.bot is not None
                await bench.run_round(1, one_workspace=False)  # warm-up, not recorded
                with tempfile.TemporaryDirectory() as workdir:
                    raw = Path(workdir) / "profile.txt"
                    recorder = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                        [py_spy, "record", "--pid", str(bench.bot.pid), "--nonblocking", "--format", "raw",
                         "--rate", str(PY_SPY_RATE_HZ), "--output", str(raw)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                    )
                    await asyncio.sleep(1.0)  # py-spy attaches
                    for _ in range(rounds):
                        result = await bench.run_round(level, one_workspace=False)
                        print(f"round of {level}: {result.complete}/{level} final, "
                              f"bot CPU {result.cpu_s:.1f} s in {result.wall_s:.1f} s", file=sys.stderr)
                    recorder.send_signal(2)  # SIGINT: py-spy writes what it has and exits
                    _, err = await asyncio.to_thread(recorder.communicate, timeout=30)
                    if not raw.exists():
                        print(err.decode(errors="replace"), file=sys.stderr)
                        return 1
                    if keep is not None:
                        shutil.copy(raw, keep)
                    print(summarise(raw, top))
        finally:
            await chat.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--platform", choices=("slack", "discord"), default="slack")
    parser.add_argument("--level", type=int, default=200, help="conversations per burst")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--keep", type=Path, help="also copy py-spy's raw (collapsed) stacks here")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args.platform, args.level, args.rounds, args.top, args.keep))


if __name__ == "__main__":
    sys.exit(main())
