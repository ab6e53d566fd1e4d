"""`run`: every bot that has its credentials, in one process, plus one HTTP server for Slack's
HTTP mode, /healthz and /metrics. SIGTERM/SIGINT stop intake and let replies in flight finish."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

import structlog
from aiohttp import web

from adapters.console import ConsoleBot
from bots.definitions import BotDefinition
from bots.metrics import Metrics
from bots.platforms import build_runtime
from bots.services import Services, redis_answers
from core.ports import BotRuntime

log = structlog.get_logger(__name__)

HEALTH_REDIS_TIMEOUT_S = 1.0  # a probe must answer fast even when Redis hangs


def choose_bots(definitions: Sequence[BotDefinition], *, stdin_is_tty: bool) -> list[BotDefinition]:
    """The bots `run` starts: those with credentials; console bots only on a terminal — unless no
    other bot can start, so a newcomer with only LUNOS_API_KEY gets a working chat."""
    chosen: list[BotDefinition] = []
    for definition in definitions:
        if definition.missing_credentials:
            log.warning("bot.skipped", bot=definition.name, file=str(definition.file),
                        reason="missing credentials: " + ", ".join(definition.missing_credentials))
            continue
        chosen.append(definition)
    others = [d for d in chosen if d.platform != "console"]
    consoles = [d for d in chosen if d.platform == "console"]
    if others and not stdin_is_tty:
        for definition in consoles:
            log.info("bot.skipped", bot=definition.name, reason="console bot needs a terminal on stdin")
        return others
    return others + consoles[:1]  # one terminal, one console bot


class HealthServer:
    """/healthz and /metrics, plus whatever routes adapters registered on `app`."""

    def __init__(self, services: Services, metrics: Metrics) -> None:
        self.app = web.Application()
        self._services = services
        self._metrics = metrics
        self._runtimes: list[BotRuntime] = []
        self._runner: web.AppRunner | None = None
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics_view)

    def watch(self, runtimes: Sequence[BotRuntime]) -> None:
        self._runtimes = list(runtimes)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        addresses = self._runner.addresses  # the bound port, when 0 asked for a free one
        return int(addresses[0][1]) if addresses else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            redis_ok = await asyncio.wait_for(redis_answers(self._services.redis), HEALTH_REDIS_TIMEOUT_S)
        except TimeoutError:
            redis_ok = False
        bots = {r.name: r.ready for r in self._runtimes}
        self._metrics.redis_up.set(1 if redis_ok else 0)
        for name, ready in bots.items():
            self._metrics.bot_ready.labels(bot=name).set(1 if ready else 0)
        healthy = redis_ok and all(bots.values())
        return web.json_response({"ok": healthy, "redis": redis_ok, "bots": bots},
                                 status=200 if healthy else 503)

    async def _metrics_view(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), content_type="text/plain", charset="utf-8")


async def run_bots(services: Services, definitions: Sequence[BotDefinition]) -> int:
    """Run until a signal (or, with only a console bot, until end of input). Returns an exit code."""
    services.announce_store()
    if not await redis_answers(services.redis):
        log.error("redis.unreachable", note="answering without history until Redis is back")
    chosen = choose_bots(definitions, stdin_is_tty=sys.stdin.isatty())
    if not chosen:
        log.error("run.nothing_to_start", note="no bot has its credentials; see `lunos-bots check`")
        return 1
    metrics = Metrics()
    server = HealthServer(services, metrics)
    runtimes: list[BotRuntime] = []
    for definition in chosen:
        engine = services.engine(definition.profile, observer=metrics)
        runtimes.append(build_runtime(definition, engine, services, server.app))
    server.watch(runtimes)
    port = await server.start(services.settings.host, services.settings.port)
    log.info("http.listening", host=services.settings.host, port=port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    started: list[BotRuntime] = []
    try:
        for runtime in runtimes:
            try:
                await runtime.start()
            except Exception as exc:  # one bot's bad token must not take the others down
                log.error("bot.start_failed", bot=runtime.name, error=repr(exc))
                continue
            started.append(runtime)
            log.info("bot.started", bot=runtime.name)
        if not started:
            log.error("run.nothing_started", note="every bot failed to start; see the lines above")
            return 1
        server.watch(started)
        waiters = [asyncio.create_task(stop.wait())]
        if all(isinstance(r, ConsoleBot) for r in runtimes):
            waiters += [asyncio.create_task(r.finished.wait()) for r in runtimes if isinstance(r, ConsoleBot)]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("run.stopping")
        await asyncio.gather(*(r.stop() for r in started), return_exceptions=True)
        await server.stop()
    return 0
