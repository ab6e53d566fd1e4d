"""`lunos-bots`: run, chat, check, usage. Argument parsing and exit codes; the work is elsewhere."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from adapters.console import ConsoleBot
from bots.definitions import BotDefinition, LoadReport, load_definitions, select
from bots.logging_setup import SecretRedactor, configure_logging
from bots.platforms import validate_platform_table
from bots.runner import run_bots
from bots.services import Services, redis_answers
from bots.settings import Settings, SettingsError
from core.errors import ChatAPIError, DefinitionError
from core.usage import UsageRow

MISSING_KEY = ("LUNOS_API_KEY is not set: export LUNOS_API_KEY=<your key> "
               "(any OpenAI-compatible server works with LUNOS_BASE_URL)")
DEFAULT_CHAT_BOT = "console"
CHECK_TIMEOUT_S = 15.0  # `check` calling GET /models


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lunos-bots", description="AI assistants for Slack, Discord and "
                                     "the terminal, on the Lunos chat-completions API.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every bot that has its credentials")
    run.add_argument("--bots", type=Path, help="directory of bot definitions (*.toml)")
    run.add_argument("--only", nargs="+", metavar="NAME", help="start only these bots")
    chat = sub.add_parser("chat", help="talk to one bot's persona in the terminal")
    chat.add_argument("name", nargs="?", default=DEFAULT_CHAT_BOT)
    chat.add_argument("--bots", type=Path)
    check = sub.add_parser("check", help="validate definitions and environment")
    check.add_argument("--bots", type=Path)
    check.add_argument("--offline", action="store_true", help="do not call the chat API")
    usage = sub.add_parser("usage", help="tokens and requests per app ID, day and model")
    usage.add_argument("--app-id")
    usage.add_argument("--days", type=int, default=7)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        settings = Settings.from_env(environ, log_format_default="console" if sys.stderr.isatty() else "json")
    except SettingsError as exc:
        print(f"lunos-bots: {exc}", file=sys.stderr)
        return 2
    if args.command in ("run", "chat") and settings.api_key is None:
        print(f"lunos-bots: {MISSING_KEY}", file=sys.stderr)
        return 2
    bots_dir = getattr(args, "bots", None) or settings.bots_dir
    report = load_definitions(bots_dir, environ) if args.command != "usage" else LoadReport()
    redactor = SecretRedactor([settings.api_key or ""])
    for definition in report.definitions:
        redactor.add(definition.secrets())
    configure_logging(level=settings.log_level, fmt=settings.log_format, redactor=redactor)
    try:
        if args.command == "check":
            return asyncio.run(_check(settings, report, offline=args.offline, out=sys.stdout))
        if args.command == "usage":
            return asyncio.run(_usage(settings, args.app_id, args.days, out=sys.stdout))
        if report.errors:
            for error in report.errors:
                print(f"lunos-bots: {error}", file=sys.stderr)
            if args.command == "run" or not report.definitions:
                return 1
        if args.command == "chat":
            return asyncio.run(_chat(settings, report.definitions, args.name))
        return asyncio.run(_run(settings, select(report.definitions, args.only)))
    except DefinitionError as exc:
        print(f"lunos-bots: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(settings: Settings, definitions: Sequence[BotDefinition]) -> int:
    async with Services(settings) as services:
        return await run_bots(services, definitions)


async def _chat(settings: Settings, definitions: Sequence[BotDefinition], name: str) -> int:
    by_name = {d.name: d for d in definitions}
    if name not in by_name:
        print(f"lunos-bots: no bot named {name!r}; known: {', '.join(sorted(by_name)) or 'none'}",
              file=sys.stderr)
        return 1
    async with Services(settings) as services:
        services.announce_store()
        bot = ConsoleBot(services.engine(by_name[name].profile))
        await bot.serve()
    return 0


async def _check(settings: Settings, report: LoadReport, *, offline: bool, out: TextIO) -> int:
    problems = 0

    def line(ok: bool, text: str) -> None:
        nonlocal problems
        problems += 0 if ok else 1
        out.write(f"{'ok   ' if ok else 'ERROR'} {text}\n")

    for error in report.errors:
        line(False, str(error))
    for definition in report.definitions:
        if definition.missing_credentials:
            line(False, f"{definition.file}: bot {definition.name!r} lacks credentials: "
                 + ", ".join(definition.missing_credentials))
            continue
        try:
            validate_platform_table(definition, settings)
        except DefinitionError as exc:
            line(False, str(exc))
        else:
            line(True, f"{definition.file}: bot {definition.name!r} ({definition.platform}, "
                 f"app_id {definition.profile.app_id}, model {definition.profile.model})")
    if not report.definitions and not report.errors:
        line(False, f"{settings.bots_dir}: no bot definitions (*.toml)")
    key_state = "set" if settings.api_key else "unset (export LUNOS_API_KEY=<your key>)"
    line(settings.api_key is not None or offline, f"LUNOS_API_KEY {key_state}")
    async with Services(settings) as services:
        if services.persistent:
            line(await redis_answers(services.redis), "Redis answers PING")
        else:
            line(True, "REDIS_URL unset: the embedded store will be used (not persistent)")
        if not offline and not settings.api_key:
            line(False, "GET /models skipped: LUNOS_API_KEY is unset")
        if not offline and settings.api_key:
            try:
                models = await asyncio.wait_for(services.chat.list_models(), CHECK_TIMEOUT_S)
            except (ChatAPIError, TimeoutError) as exc:
                line(False, f"GET {settings.base_url}/models: {str(exc) or 'timed out'}")
            else:
                line(True, f"GET {settings.base_url}/models: {len(models)} models")
                for definition in report.definitions:
                    chain = (definition.profile.model, *definition.profile.fallback_models)
                    unknown = [m for m in chain if models and m not in models]
                    if unknown:
                        out.write(f"warn  {definition.file}: model(s) not listed by the API: "
                                  f"{', '.join(unknown)}\n")
    out.write("check passed\n" if problems == 0 else f"check failed: {problems} problem(s)\n")
    return 0 if problems == 0 else 1


async def _usage(settings: Settings, app_id: str | None, days: int, *, out: TextIO) -> int:
    async with Services(settings) as services:
        if not services.persistent:
            out.write("REDIS_URL is unset: the embedded store keeps no usage between runs.\n")
        rows = await services.usage.read(app_id=app_id, days=days)
    out.write(format_usage(rows))
    return 0


def format_usage(rows: Sequence[UsageRow]) -> str:
    header = ("day", "app_id", "model", "requests", "prompt_tokens", "completion_tokens", "usage_unknown")
    table = [header] + [
        (r.day, r.app_id, r.model, str(r.requests), str(r.prompt_tokens), str(r.completion_tokens),
         str(r.usage_unknown)) for r in rows
    ]
    if not rows:
        return "no usage recorded in this period\n"
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in table)


if __name__ == "__main__":
    sys.exit(main())
