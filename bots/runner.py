"""`run`: every bot that has its credentials, in one process, plus one HTTP server for Slack's
HTTP mode, /healthz (liveness), /readyz (readiness) and /metrics. SIGTERM/SIGINT stop intake and let
replies in flight finish within SHUTDOWN_GRACE_S.

A bot that fails to start (a rejected token, a platform that is down at deploy time) does not
stop the others: its `BotSupervisor` logs one line per attempt, tries again with capped backoff,
and /readyz and /metrics show it as not ready until it is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import stat
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import structlog
from aiohttp import web

from bots.definitions import BotDefinition
from bots.instrumentation import InstrumentedEngine
from bots.metrics import Metrics
from bots.platforms import build_runtime, is_terminal
from bots.services import Services, redis_answers
from bots.settings import SettingsError
from core.engine import ConversationEngine
from core.journal import JournalEntry
from core.ports import BotRuntime, EndingRuntime, JournaledRuntime

log = structlog.get_logger(__name__)

READY_REDIS_TIMEOUT_S = 1.0  # a readiness probe must answer fast even when Redis hangs
# One start attempt (log in, open the socket). slack-sdk's Socket Mode connect retries some failures
# forever on its own; past this the attempt counts as failed and is retried by us, visibly.
START_TIMEOUT_S = 60.0
START_RETRY_FIRST_S = 5.0  # the first retry: a blip at deploy time is over by then
START_RETRY_MAX_S = 300.0  # the cap: a platform outage is retried every 5 minutes, not hammered

SupervisorState = Literal["waiting", "starting", "running", "retrying", "stopped"]


def console_input_available(stdin: TextIO) -> bool:
    """Whether a console bot has someone to talk to: a terminal, or input piped or redirected from a
    file. Not /dev/null or a closed stdin, as under docker, compose or Kubernetes without `-it`:
    there the console bot would read end of input at once and the container would restart forever."""
    try:
        if stdin.isatty():
            return True
        mode = os.fstat(stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def choose_bots(definitions: Sequence[BotDefinition], *, console_input: bool) -> list[BotDefinition]:
    """The bots `run` starts: those with credentials; a terminal bot (the console) only when it has
    input (a terminal, a pipe, a file), and one at most: there is one stdin."""
    chosen: list[BotDefinition] = []
    for definition in definitions:
        if definition.missing_credentials:
            log.warning("bot.skipped", bot=definition.name, file=str(definition.file),
                        reason="missing credentials: " + ", ".join(definition.missing_credentials))
            continue
        chosen.append(definition)
    others = [d for d in chosen if not is_terminal(d)]
    consoles = [d for d in chosen if is_terminal(d)]
    if not console_input:
        for definition in consoles:
            log.info("bot.skipped", bot=definition.name, reason="console bot needs a terminal on stdin")
        return others
    return others + consoles[:1]


def nothing_to_run(
    definitions: Sequence[BotDefinition], bots_dir: Path | None, *, console_input: bool
) -> str:
    """The one line `run` prints when no bot can start, saying why and what to do."""
    if not definitions:
        where = f" in {bots_dir}" if bots_dir is not None else ""
        return (f"no bot definitions{where}: add a *.toml there (see bots/*.toml.example), "
                "or point --bots / LUNOS_BOTS_DIR at your definitions")
    consoles = [d for d in definitions if is_terminal(d) and not d.missing_credentials]
    if consoles and not console_input:
        return ("nothing to run: no Slack or Discord bot has its credentials, and the console bot needs "
                "a terminal on stdin (stdin is not one); export the tokens your definitions name "
                "(`lunos-bots check` lists them), or use `lunos-bots chat` in a terminal")
    return "no bot has its credentials: export the variables your definitions name (see `lunos-bots check`)"


async def wait_for_stop(stop: asyncio.Event, seconds: float) -> None:
    """Until `stop` is set or `seconds` have passed, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


Pause = Callable[[asyncio.Event, float], Awaitable[None]]


class BotSupervisor:
    """Starts one runtime and, when a start fails or hangs, tries again with capped exponential
    backoff until `stop` is set. Read by the health server (`ready`, `failure`)."""

    def __init__(
        self, runtime: BotRuntime, stop: asyncio.Event, *, timeout_s: float = START_TIMEOUT_S,
        first_retry_s: float = START_RETRY_FIRST_S, max_retry_s: float = START_RETRY_MAX_S,
        pause: Pause = wait_for_stop, on_started: Callable[[BotRuntime], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self._on_started = on_started
        self.state: SupervisorState = "waiting"
        self.attempts = 0
        self.last_error: str | None = None
        self.started = asyncio.Event()
        self._stop = stop
        self._timeout_s = timeout_s
        self._first_retry_s = first_retry_s
        self._max_retry_s = max_retry_s
        self._pause = pause

    @property
    def name(self) -> str:
        return self.runtime.name

    @property
    def ready(self) -> bool:
        return self.state == "running" and self.runtime.ready

    def failure(self) -> dict[str, Any] | None:
        """For /readyz: why the bot is not running yet, while it is being retried."""
        if self.state == "running" or self.last_error is None:
            return None
        return {"attempts": self.attempts, "error": self.last_error}

    async def run(self) -> None:
        """Start the runtime, retrying until it starts or `stop` is set (then it returns)."""
        delay = self._first_retry_s
        while not self._stop.is_set():
            self.attempts += 1
            self.state = "starting"
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self.runtime.start()
            except Exception as exc:  # one bot's bad token must not take the others down
                self.last_error = _describe(exc, self._timeout_s)
                self.state = "retrying"
                log.error("bot.start_failed", bot=self.name, attempt=self.attempts, error=self.last_error,
                          error_type=type(exc).__name__, retry_in_s=round(delay, 1))
                await self._pause(self._stop, delay)
                delay = min(self._max_retry_s, delay * 2)
                continue
            self.state = "running"
            self.last_error = None
            self.started.set()
            log.info("bot.started", bot=self.name, attempt=self.attempts)
            if self._on_started is not None:
                self._on_started(self.runtime)
            return


def _describe(exc: Exception, timeout_s: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"start did not finish within {timeout_s:g} s (platform unreachable?)"
    return str(exc) or type(exc).__name__


class Watched(Protocol):
    """What /readyz and /metrics read of a bot: a `BotRuntime` or its `BotSupervisor`."""

    @property
    def name(self) -> str: ...

    @property
    def ready(self) -> bool: ...


class HealthServer:
    """/healthz, /readyz and /metrics, plus whatever routes adapters registered on `app`.

    /healthz is liveness: it answers 200 whenever the event loop does, and never looks at Redis or a
    platform — a liveness probe failing on a Redis outage would restart every pod and bring nothing
    back. /readyz is readiness: 200 only when every bot is connected and Redis answers PING, else 503
    with what is missing."""

    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.app = web.Application()
        self._services = services
        self._metrics = metrics
        self._runtimes: list[Watched] = []
        self._supervisors: list[BotSupervisor] = []
        self._runner: web.AppRunner | None = None
        metrics.watch_redis(services.circuit)
        metrics.watch_write_behind(services.write_behind)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics_view)

    def watch(self, runtimes: Sequence[Watched]) -> None:
        self._runtimes = list(runtimes)
        self._supervisors = [r for r in runtimes if isinstance(r, BotSupervisor)]

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port. A port in use (or a HOST this machine does
        not have) is a `SettingsError` naming PORT/HOST."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise SettingsError(_listen_problem(host, port, exc)) from exc
        addresses = self._runner.addresses  # the bound port, when 0 asked for a free one
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def update_metrics(self) -> dict[str, bool]:
        bots = {r.name: r.ready for r in self._runtimes}
        for name, ready in bots.items():
            self._metrics.bot_ready.labels(bot=name).set(1 if ready else 0)
        return bots

    async def _healthz(self, request: web.Request) -> web.Response:
        # Which bots are ready is shown for people (read from memory, no I/O); it never fails the probe.
        return web.json_response({"ok": True, "bots": self.update_metrics()})

    async def _readyz(self, request: web.Request) -> web.Response:
        try:
            problem = await asyncio.wait_for(self._services.redis_ready(), READY_REDIS_TIMEOUT_S)
        except TimeoutError:
            self._services.circuit.record_failure()
            problem = "timed out"
        redis_ok = problem is None
        self._metrics.redis_up.set(1 if redis_ok else 0)
        bots = self.update_metrics()
        ready = redis_ok and all(bots.values())
        body: dict[str, Any] = {"ok": ready, "redis": redis_ok, "bots": bots}
        if problem is not None:
            body["redis_error"] = problem
        failures = {s.name: f for s in self._supervisors if (f := s.failure()) is not None}
        if failures:
            body["start_failures"] = failures
        return web.json_response(body, status=200 if ready else 503)

    async def _metrics_view(self, request: web.Request) -> web.Response:
        self.update_metrics()  # a scrape without a health probe still sees which bots are up
        return web.Response(body=self._metrics.render(), content_type="text/plain", charset="utf-8")


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (f"PORT={port}: port {port} on {host} is already in use; stop the other process or "
                "set PORT to a free port")
    if exc.errno == errno.EACCES:
        return f"PORT={port}: not allowed to listen on port {port}; use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"HOST={host}: this machine has no such address; use 0.0.0.0 or 127.0.0.1"
    return f"HOST={host} PORT={port}: cannot listen there ({exc.strerror or exc}); fix HOST or PORT"


async def run_bots(
    services: Services, definitions: Sequence[BotDefinition], *, bots_dir: Path | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run until a signal (or, with only a console bot, until end of input). Returns an exit code;
    raises `SettingsError` for a setup mistake (nothing to run, a port in use)."""
    console_input = console_input_available(stdin or sys.stdin)
    services.announce_store()
    if not await redis_answers(services.redis):
        log.error("redis.unreachable", note="answering without history until Redis is back")
    chosen = choose_bots(definitions, console_input=console_input)
    if not chosen:
        raise SettingsError(nothing_to_run(definitions, bots_dir, console_input=console_input))
    metrics = Metrics()
    server = HealthServer(services, metrics)
    stop = asyncio.Event()
    # Replies a dead or stuck owner left (on any replica, before or after this process started)
    # are finalised by whichever process runs their bot: each bot joins the sweep once started.
    engines: dict[str, ConversationEngine] = {}

    async def correct_history(entry: JournalEntry) -> None:
        engine = engines.get(entry.bot)
        if engine is not None:
            await engine.correct_abandoned(entry)

    sweeper = services.sweeper(on_outcome=metrics.journal_outcome, on_abandoned=correct_history)
    sweeper.start()

    def sweep_for(runtime: BotRuntime) -> None:
        if isinstance(runtime, JournaledRuntime):
            sweeper.add(runtime.name, runtime.finaliser())

    supervisors: list[BotSupervisor] = []
    for definition in chosen:
        engine = services.engine(definition.profile, observer=metrics, limits=definition.limits,
                                 on_refusal=metrics.limit_refused, on_vote=metrics.feedback_vote,
                                 engine_type=partial(InstrumentedEngine, metrics=metrics))
        engines[definition.profile.name] = engine
        runtime = build_runtime(definition, engine, services, server.app, metrics)
        supervisors.append(BotSupervisor(runtime, stop, on_started=sweep_for))
    server.watch(supervisors)
    # HTTP only when something needs it: Slack/Discord deployments (probes, metrics, Slack HTTP
    # mode), or PORT/HOST set on purpose. The terminal bot alone binds nothing.
    serve_http = services.settings.http_requested or any(not is_terminal(d) for d in chosen)
    if serve_http:
        port = await server.start(services.settings.host, services.settings.port)
        log.info("http.listening", host=services.settings.host, port=port)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(s.run(), name=f"start-{s.name}") for s in supervisors]
    consoles = [s.runtime for s in supervisors if isinstance(s.runtime, EndingRuntime)]
    try:
        waiters = [asyncio.create_task(stop.wait())]
        if len(consoles) == len(supervisors):  # a terminal session ends with its input
            waiters += [asyncio.create_task(c.finished.wait()) for c in consoles]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        stop.set()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("run.stopping")
        for task in tasks:  # a start still in progress (or waiting to retry) is abandoned at once
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sweeper.stop()  # a reply this process cannot finish now is left to the next sweep, anywhere
        attempted = [s.runtime for s in supervisors if s.attempts > 0]
        await asyncio.gather(*(r.stop() for r in attempted), return_exceptions=True)
        await server.stop()
    return 0
