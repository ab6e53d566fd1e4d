"""`lunos-bots`: run, chat, check, usage. Argument parsing and exit codes; the work is elsewhere.

Exit codes: 0 fine; 1 a check failed or definitions are broken; 2 a setup mistake (a setting, a port
in use, Redis unreachable, nothing to run) — printed as one `lunos-bots: …` line that names the
setting and the fix, never a traceback; 130 interrupted; 141 output closed early (`check | head`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from redis.exceptions import RedisError

from adapters.console import ConsoleBot
from bots.definitions import BotDefinition, LoadReport, load_definitions, select
from bots.logging_setup import SecretRedactor, configure_logging
from bots.platforms import prove_credentials, validate_platform_table
from bots.runner import run_bots
from bots.services import Services, describe_redis_error, redis_problem
from bots.settings import Settings, SettingsError, redact_url
from core.errors import ChatAPIError, DefinitionError, HistoryUnavailable, InvalidDefinition
from core.usage import UsageRow, usage_document

MISSING_KEY = ("LUNOS_API_KEY is not set: export LUNOS_API_KEY=<your key> "
               "(any OpenAI-compatible server works with LUNOS_BASE_URL)")
DEFAULT_CHAT_BOT = "console"
CHECK_TIMEOUT_S = 15.0  # `check` calling GET /models, auth.test, GET /users/@me: each
EXIT_SETUP = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a reader that went away
CHAT_LOG_LEVEL = "WARNING"  # `chat`: the conversation is the output; only trouble is logged

# discord.py imports the stdlib `audioop` (voice playback, which the bots never use); Python 3.11
# deprecates it. Shown only under -W, but never worth a user's attention.
warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)


def _version() -> str:
    try:
        return importlib.metadata.version("lunos-bots")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _positive_days(raw: str) -> int:
    try:
        days = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {raw!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {days}")
    return days


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lunos-bots", description="AI assistants for Slack, Discord and "
                                     "the terminal, on the Lunos chat-completions API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start every bot that has its credentials")
    run.add_argument("--bots", type=Path, help="directory of bot definitions (*.toml)")
    run.add_argument("--only", nargs="+", metavar="NAME", help="start only these bots")
    chat = sub.add_parser("chat", help="talk to one bot's persona in the terminal")
    chat.add_argument("name", nargs="?", default=DEFAULT_CHAT_BOT)
    chat.add_argument("--bots", type=Path, help="directory of bot definitions (*.toml)")
    check = sub.add_parser("check", help="validate definitions, environment and every credential")
    check.add_argument("--bots", type=Path, help="directory of bot definitions (*.toml)")
    check.add_argument("--offline", action="store_true",
                       help="do not call the chat API, Slack or Discord")
    usage = sub.add_parser("usage", help="tokens and requests per app ID, day and model")
    usage.add_argument("--app-id")
    usage.add_argument("--days", type=_positive_days, default=7, help="days back, today included (≥ 1)")
    usage.add_argument("--json", action="store_true", help="one JSON document (README \"Usage\")")
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    try:
        code = _main(argv, env)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`check | head`): say nothing more. Point stdout at /dev/null so the
        # interpreter's own flush at exit does not raise again.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Sequence[str] | None, env: Mapping[str, str] | None) -> int:
    args = _parser().parse_args(argv)
    environ = dict(os.environ if env is None else env)
    try:
        settings = Settings.from_env(environ, log_format_default="console" if sys.stderr.isatty() else "json")
    except SettingsError as exc:
        return _setup_error(exc)
    if args.command in ("run", "chat") and settings.api_key is None:
        return _setup_error(MISSING_KEY)
    bots_dir: Path = getattr(args, "bots", None) or settings.bots_dir
    report = load_definitions(bots_dir, environ) if args.command != "usage" else LoadReport()
    redactor = SecretRedactor([settings.api_key or ""])
    for definition in report.definitions:
        redactor.add(definition.secrets())
    log_note = _configure_logging(settings, redactor, chat=args.command == "chat", env=environ)
    try:
        if args.command == "check":
            return asyncio.run(_check(settings, report, bots_dir, offline=args.offline, out=sys.stdout))
        if args.command == "usage":
            # Which bot each app ID is (app IDs are unique per bot); a bad definition costs only its name.
            bots = {d.profile.app_id: d.name for d in load_definitions(bots_dir, environ).definitions}
            return asyncio.run(_usage(settings, args.app_id, args.days, as_json=args.json, out=sys.stdout,
                                      bots=bots))
        if report.errors:
            for error in report.errors:
                print(f"lunos-bots: {error}", file=sys.stderr)
            if args.command == "run" or not report.definitions:
                return 1
        if args.command == "chat":
            return asyncio.run(_chat(settings, report.definitions, args.name, log_note=log_note))
        return asyncio.run(_run(settings, select(report.definitions, args.only), bots_dir))
    except SettingsError as exc:
        return _setup_error(exc)
    except DefinitionError as exc:
        print(f"lunos-bots: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _setup_error(problem: object) -> int:
    print(f"lunos-bots: {problem}", file=sys.stderr)
    return EXIT_SETUP


def _configure_logging(settings: Settings, redactor: SecretRedactor, *, chat: bool,
                       env: Mapping[str, str]) -> str | None:
    """Logging for this command. In `chat` the terminal belongs to the conversation: log lines go to
    a file when stdout is a terminal (else to stderr), at WARNING unless LOG_LEVEL says otherwise.
    Returns where chat logs go, for the banner."""
    if not chat:
        configure_logging(level=settings.log_level, fmt=settings.log_format, redactor=redactor)
        return None
    level = settings.log_level if env.get("LOG_LEVEL", "").strip() else CHAT_LOG_LEVEL
    if not sys.stdout.isatty():
        configure_logging(level=level, fmt=settings.log_format, redactor=redactor)
        return None
    path = chat_log_path()
    try:
        stream = path.open("a", encoding="utf-8")  # open for the life of the process
    except OSError:
        configure_logging(level=level, fmt=settings.log_format, redactor=redactor)
        return None
    configure_logging(level=level, fmt="json", redactor=redactor, stream=stream)
    return str(path)


def chat_log_path() -> Path:
    """Where `chat` on a terminal writes its log lines: one file per user in the temp directory."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"lunos-bots-chat-{uid}.log"


async def _run(settings: Settings, definitions: Sequence[BotDefinition], bots_dir: Path) -> int:
    async with Services(settings) as services:
        return await run_bots(services, definitions, bots_dir=bots_dir)


async def _chat(settings: Settings, definitions: Sequence[BotDefinition], name: str, *,
                log_note: str | None) -> int:
    by_name = {d.name: d for d in definitions}
    if name not in by_name:
        print(f"lunos-bots: no bot named {name!r}; known: {', '.join(sorted(by_name)) or 'none'}",
              file=sys.stderr)
        return 1
    async with Services(settings) as services:
        services.announce_store()
        store = (f"history in Redis ({redact_url(settings.redis_url or '')})" if services.persistent
                 else "history kept in memory only (REDIS_URL unset)")
        notes = [store] + ([f"logs: {log_note}"] if log_note else [])
        bot = ConsoleBot(services.engine(by_name[name].profile), interactive_signals=True,
                         banner_note="; ".join(notes))
        await bot.serve()
    return 0


class CheckReport:
    """`check`'s lines: `ok`, `ERROR` or `warn`, then what was checked."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems = 0

    def line(self, ok: bool, text: str) -> None:
        self.problems += 0 if ok else 1
        self.out.write(f"{'ok   ' if ok else 'ERROR'} {text}\n")

    def warn(self, text: str) -> None:
        self.out.write(f"warn  {text}\n")


async def _check(
    settings: Settings, report: LoadReport, bots_dir: Path, *, offline: bool, out: TextIO
) -> int:
    result = CheckReport(out)
    for error in report.errors:
        result.line(False, str(error))
    ready: list[tuple[BotDefinition, object]] = []  # with the platform config `run` would use
    for definition in report.definitions:
        if definition.missing_credentials:
            result.line(False, f"{definition.file}: bot {definition.name!r} lacks credentials: "
                        + ", ".join(definition.missing_credentials))
            continue
        try:
            config = validate_platform_table(definition, settings)
        except InvalidDefinition as exc:
            for error in exc.errors:
                result.line(False, str(error))
        except DefinitionError as exc:
            result.line(False, str(exc))
        else:
            ready.append((definition, config))
            result.line(True, f"{definition.file}: bot {definition.name!r} ({definition.platform}, "
                        f"app_id {definition.profile.app_id}, model {definition.profile.model})")
    if not report.definitions and not report.errors:
        result.line(False, f"no bot definitions in {bots_dir} (*.toml)")
    result.line(settings.api_key is not None,
                "LUNOS_API_KEY " + ("set" if settings.api_key else "unset (export LUNOS_API_KEY=<your key>)"))
    async with Services(settings) as services:
        if services.persistent:
            url = redact_url(settings.redis_url or "")
            problem = await redis_problem(services.redis)
            result.line(problem is None, f"Redis at {url} answers PING" if problem is None
                        else f"Redis at {url}: {problem}; start Redis or fix REDIS_URL")
        else:
            result.line(True, "REDIS_URL unset: the embedded store will be used (not persistent)")
        if offline:
            out.write("online checks skipped (--offline): the chat API, Slack and Discord were not called\n")
        else:
            await _check_chat_api(settings, services, report.definitions, result)
            await _check_platforms(settings, ready, result)
    out.write("check passed\n" if result.problems == 0 else f"check failed: {result.problems} problem(s)\n")
    return 0 if result.problems == 0 else 1


async def _check_chat_api(settings: Settings, services: Services, definitions: Sequence[BotDefinition],
                          result: CheckReport) -> None:
    where = f"GET {settings.base_url}/models"
    if not settings.api_key:
        result.line(False, f"{where} skipped: LUNOS_API_KEY is unset")
        return
    try:
        models = await asyncio.wait_for(services.chat.list_models(), CHECK_TIMEOUT_S)
    except TimeoutError:
        result.line(False, f"{where}: no answer within {CHECK_TIMEOUT_S:g} s; check LUNOS_BASE_URL")
        return
    except ChatAPIError as exc:
        hint = exc.hint if exc.status is not None else "check LUNOS_BASE_URL (is the server up?)"
        result.line(False, f"{where}: {exc}; {hint}")
        return
    result.line(True, f"{where}: {len(models)} models")
    if not models:
        result.warn("the API lists no models, so model ids were not checked")
        return
    listed = set(models)
    for definition in definitions:
        chain = (definition.profile.model, *definition.profile.fallback_models)
        unknown = [m for m in chain if m not in listed]
        result.line(not unknown, f"{definition.file}: " + (
            f"model(s) {', '.join(chain)} listed by the API" if not unknown
            else f"model(s) not listed by the API: {', '.join(unknown)}; fix model / fallback_models"))


async def _check_platforms(settings: Settings, definitions: Sequence[tuple[BotDefinition, object]],
                           result: CheckReport) -> None:
    for definition, config in definitions:
        for line in await prove_credentials(definition, config, settings, CHECK_TIMEOUT_S):
            result.line(line.ok, f"{definition.file}: {line.text}")


async def _usage(settings: Settings, app_id: str | None, days: int, *, as_json: bool, out: TextIO,
                 bots: Mapping[str, str] | None = None) -> int:
    async with Services(settings) as services:
        if not services.persistent:
            # On stderr with --json: stdout stays one JSON document.
            print("REDIS_URL is unset: the embedded store keeps no usage between runs.",
                  file=sys.stderr if as_json else out)
        try:
            rows = await services.usage.read(app_id=app_id, days=days)
        except (RedisError, OSError, HistoryUnavailable) as exc:
            raise SettingsError(
                f"REDIS_URL: Redis at {redact_url(settings.redis_url or '')} is unreachable "
                f"({describe_redis_error(exc)}); start Redis or fix REDIS_URL") from exc
    if as_json:
        today = datetime.now(UTC).date().isoformat()
        document = usage_document(rows, days=days, app_id=app_id, today=today)
        for row in document["rows"]:
            row["bot"] = (bots or {}).get(row["app_id"])
        out.write(json.dumps(document, indent=2) + "\n")
        return 0
    out.write(format_usage(rows, bots or {}))
    return 0


def format_usage(rows: Sequence[UsageRow], bots: Mapping[str, str] | None = None) -> str:
    """The usage table; `bots` names the bot of each app ID it knows."""
    header = ("day", "app_id", "bot", "model", "requests", "prompt_tokens", "completion_tokens",
              "usage_unknown", "fallbacks", "failures", "refused", "👍", "👎")
    table = [header] + [
        (r.day, r.app_id, (bots or {}).get(r.app_id, "-"), r.model, str(r.requests), str(r.prompt_tokens),
         str(r.completion_tokens), str(r.usage_unknown), str(r.fallbacks), str(r.failures),
         ",".join(f"{limit}={n}" for limit, n in sorted(r.refusals.items())) or "0",
         str(r.feedback_up), str(r.feedback_down)) for r in rows
    ]
    if not rows:
        return "no usage recorded in this period\n"
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    return "".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in table)


if __name__ == "__main__":
    sys.exit(main())
