"""`ReplySupervisor`: the reply tasks of one bot — spawned, waited for, drained at shutdown.

Every adapter answers a message in a task of its own (the platform's event loop must not wait for a
model), so every adapter needs the same three things: start a reply with the bot's log context
bound, wait until every reply started so far has finished (tests, benchmarks), and at shutdown let
replies finish for a while, then cancel the rest (the engine still leaves each a final message) and
give those a bounded time to leave it. This module holds that policy once; the adapters choose the
two durations from the one shutdown setting (SHUTDOWN_GRACE_S) and say what else must happen
when replies are cut short (Discord lifts its channel spacing).

It must not know any platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import structlog

from core.profile import BotProfile

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DrainReport:
    """What `ReplySupervisor.drain` found: replies cut short at the end of their grace, and of
    those (with anything they started meanwhile) how many had still not ended when it returned."""

    cut_short: int = 0
    unfinished: int = 0


class ReplySupervisor:
    """The tasks of one bot's replies. `log_context` (bot, app_id, platform) is bound in every task
    it spawns, with the task's own context (event id, conversation) on top: every log line of a
    reply carries them, and no adapter binds them itself."""

    def __init__(self, log_context: Mapping[str, object]) -> None:
        self.log_context: dict[str, object] = dict(log_context)
        self._cancellable: set[asyncio.Task[Any]] = set()  # replies and their after-work
        self._waited: set[asyncio.Task[Any]] = set()  # waited for at shutdown, never cancelled

    @classmethod
    def for_bot(cls, profile: BotProfile, platform: str) -> ReplySupervisor:
        """The supervisor of one bot's replies, its log lines carrying `bot`, `app_id`, `platform`."""
        return cls({"bot": profile.name, "app_id": profile.app_id, "platform": platform})

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str, **context: object) -> asyncio.Task[Any]:
        """Run `work` in a tracked task with the bot's log context and `context` bound."""
        bound = {**self.log_context, **context}

        async def run() -> Any:
            with structlog.contextvars.bound_contextvars(**bound):
                return await work

        task = asyncio.create_task(run(), name=name)
        self.track(task)
        return task

    def track(self, task: asyncio.Task[Any] | None, *, cancel_at_drain: bool = True) -> None:
        """Track a task that is already running (e.g. the one a platform library runs a command
        in). With `cancel_at_drain=False` the drain waits for it within the grace but never cancels
        it (a request an HTTP server is still answering)."""
        if task is None:
            return
        tasks = self._cancellable if cancel_at_drain else self._waited
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def bind(self, **context: object) -> AbstractContextManager[None]:
        """The bot's log context plus `context`, bound for a `with` block (work outside a spawned
        task, such as a platform's own command callback)."""
        return structlog.contextvars.bound_contextvars(**{**self.log_context, **context})

    async def wait_idle(self) -> None:
        """Until every task started so far, and any it starts meanwhile, has finished."""
        while pending := self._pending():
            await asyncio.gather(*pending, return_exceptions=True)

    async def drain(
        self, *, finish_s: float, total_s: float, on_cut_short: Callable[[], None] | None = None,
    ) -> DrainReport:
        """Shutdown, once intake has stopped: replies get `finish_s` to end on their own (a task a
        reply starts meanwhile is waited for too). The rest are cancelled — after `on_cut_short`
        — and get what is left of `total_s` to leave their final message; whatever still runs
        then is cancelled again and not waited for further."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        finish_by = started + min(finish_s, total_s)
        while pending := self._pending():  # a loop: work that got past intake starts replies late
            remaining = finish_by - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(pending, timeout=remaining)
        late = self._pending(self._cancellable)
        if not late:
            return DrainReport()
        log.info("replies.cut_short", **self.log_context, replies=len(late))
        if on_cut_short is not None:
            on_cut_short()
        for task in late:
            task.cancel()
        # What the cancelled replies start while ending (clearing a working signal) is waited for too.
        while pending := self._pending(self._cancellable):
            remaining = started + total_s - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(pending, timeout=remaining)
        unfinished = self._pending(self._cancellable)
        if unfinished:
            log.warning("replies.unfinished", **self.log_context, replies=len(unfinished), budget_s=total_s)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
        return DrainReport(cut_short=len(late), unfinished=len(unfinished))

    def _pending(self, tasks: set[asyncio.Task[Any]] | None = None) -> set[asyncio.Task[Any]]:
        """Unfinished tasks (of `tasks`, else of both sets), never the caller's own task (a
        command that stops the bot, or waits for it to be idle, from inside a tracked task)."""
        chosen = tasks if tasks is not None else self._cancellable | self._waited
        current = asyncio.current_task()
        return {t for t in chosen if not t.done() and t is not current}
