"""`ReplyStream`: runs the streaming renderer against a `ReplySink`.

It owns the timing the pure renderer cannot: a timer that sends a held-back update when it falls
due, and one worker that talks to the sink so at most one platform call per reply is in flight.
While a call is in flight newer edits of the same message replace older queued ones (newest text
wins); posts and final edits are never dropped.

Posts go before queued edits: a post decides where a message sits in the conversation, an edit only
what it says. So once `end` has fixed the final text, `posts_landed` returns as soon as every
message of the reply exists, and the caller may let the conversation's next turn start while the
final edits are still on their way (`close` waits for those).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

import structlog

from core.errors import ReplyUndeliverable
from core.ports import ReplySink
from core.streaming import Edit, Operation, Post, StreamRenderer

log = structlog.get_logger(__name__)

FINAL_OPERATION_ATTEMPTS = 3  # a final state is what the user keeps: worth retrying
FINAL_RETRY_DELAY_S = 0.2  # doubled per retry; sinks already honour platform Retry-After


class ReplyStream:
    """One reply being streamed to one sink. Use `open`, `push` per delta, then `close` once."""

    def __init__(self, sink: ReplySink, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._sink = sink
        self._clock = clock
        self._renderer = StreamRenderer(sink.limits)
        self._queue: deque[Operation] = deque()
        self._refs: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self.failed_operations = 0
        self._ended = False  # `end` ran: the final text is decided
        self._delivery: asyncio.Task[None] | None = None  # `close`: final states, then sink.finish
        self._posts_pending = 0
        self._posts_idle = asyncio.Event()
        self._posts_idle.set()
        self.undeliverable: ReplyUndeliverable | None = None  # set when the sink gave up for good
        self._last_sent: dict[int, float] = {}  # message index → when its last call went out

    @property
    def sink(self) -> ReplySink:
        return self._sink

    @property
    def ended(self) -> bool:
        """`end` (or `close`) has run: the final text is decided."""
        return self._ended

    @property
    def text(self) -> str:
        """The model text received so far."""
        return self._renderer.text

    async def open(self) -> None:
        """Show the working signal and the placeholder, if the platform uses one."""
        self._worker = asyncio.create_task(self._run(), name="reply-stream")
        try:
            await self._sink.start()
        except Exception as exc:  # a failed typing indicator must not cost the answer
            log.warning("reply.start_failed", error=repr(exc))
        if self._sink.limits is not self._renderer.limits:
            self._renderer.adopt_limits(self._sink.limits)  # the sink chose how this reply grows
        self._enqueue(self._renderer.start(self._clock()))

    async def push(self, delta: str) -> None:
        """Add model text. Never blocks on the platform. Raises `ReplyUndeliverable` once the
        platform refused the reply for good, so the caller stops the model stream."""
        if self.undeliverable is not None:
            raise self.undeliverable
        if not delta or self._renderer.finished:
            return
        if self._sink.limits is not self._renderer.limits:
            self._renderer.adopt_limits(self._sink.limits)  # e.g. a native stream fell back to edits
        self._enqueue(self._renderer.feed(delta, self._clock()))
        self._arm_timer()

    def end(self, note: str | None = None) -> None:
        """Decide the final text: the text so far with `note` after it (or `note` alone when there
        is none). The final states are queued at once; `close` waits for them. Only the first call
        (of `end` or `close`) sets the note."""
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._enqueue(self._renderer.finish(self._clock(), note))
        self._closing = True
        self._wake.set()

    async def posts_landed(self) -> None:
        """Wait until every message of the reply queued so far exists on the platform (or the
        platform refused the reply for good); edits may still be on their way."""
        await self._posts_idle.wait()

    async def close(self, note: str | None = None) -> None:
        """`end(note)`, then wait until the platform has every final state and the working signal
        is cleared. Safe to call more than once and from several tasks."""
        self.end(note)
        if self._delivery is None:
            self._delivery = asyncio.create_task(self._deliver(), name="reply-delivery")
        await asyncio.shield(self._delivery)

    async def _deliver(self) -> None:
        if self._worker is not None:
            await self._worker
        try:
            await self._sink.finish()
        except Exception as exc:
            log.warning("reply.finish_failed", error=repr(exc))

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, ops: list[Operation]) -> None:
        if ops:
            self._queue.extend(ops)
            posts = sum(1 for op in ops if isinstance(op, Post))
            if posts:
                self._posts_pending += posts
                self._posts_idle.clear()
            self._wake.set()

    def _next_operation(self) -> Operation:
        """The oldest queued post if there is one, else the oldest operation. A message's post is
        always queued before its edits, so no edit can overtake the post it needs."""
        for i, op in enumerate(self._queue):
            if isinstance(op, Post):
                del self._queue[i]
                return op
        return self._queue.popleft()

    def _post_done(self) -> None:
        self._posts_pending -= 1
        if self._posts_pending == 0:
            self._posts_idle.set()

    def _arm_timer(self) -> None:
        if self._timer is not None and not self._timer.done():
            return
        due = self._renderer.due_at()
        if due is None:
            return
        self._timer = asyncio.create_task(self._fire_at(due), name="reply-stream-timer")

    async def _fire_at(self, due: float) -> None:
        delay = due - self._clock()
        if delay > 0:
            await asyncio.sleep(delay)
        self._timer = None
        self._enqueue(self._renderer.tick(self._clock()))
        self._arm_timer()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                op = self._next_operation()
                try:
                    if self.undeliverable is not None:
                        continue  # nothing more can be shown: drop, do not repost
                    if isinstance(op, Edit) and not op.final and not await self._wait_for_turn(op):
                        continue
                    await self._execute(op)
                finally:
                    if isinstance(op, Post):
                        self._post_done()
            if self._closing and not self._queue:
                return

    async def _wait_for_turn(self, op: Edit) -> bool:
        """Hold a growing edit until its message's interval has passed since the platform took the
        last call (the renderer spaces edits when it makes them; a slow call before this one — a
        post waiting for its budget, say — would otherwise bunch them up on the platform's side).
        False when a newer edit replaced it meanwhile."""
        interval = self._renderer.limits.min_edit_interval_s
        while not self._superseded(op):
            wait = self._last_sent.get(op.index, float("-inf")) + interval - self._clock()
            if wait <= 0:
                return True
            self._wake.clear()  # anything queued meanwhile is still in the queue when we return
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                pass
        return False

    def _superseded(self, op: Edit) -> bool:
        return any(isinstance(o, Edit) and o.index == op.index for o in self._queue)

    async def _execute(self, op: Operation) -> None:
        final = isinstance(op, Post) or op.final
        attempts = FINAL_OPERATION_ATTEMPTS if final else 1
        for attempt in range(1, attempts + 1):
            try:
                ref = self._refs.get(op.index)
                if isinstance(op, Post) or ref is None or attempt == attempts > 1:
                    # A post, an edit whose post failed, or a final edit that keeps failing (the
                    # message was deleted, say): post the text anew so it still appears.
                    self._refs[op.index] = await self._sink.post(op.text)
                else:
                    await self._sink.edit(ref, op.text, final=op.final)
                self._last_sent[op.index] = self._clock()
                return
            except asyncio.CancelledError:
                raise
            except ReplyUndeliverable as exc:
                self.undeliverable = exc
                log.warning("reply.undeliverable", operation=type(op).__name__, error=str(exc))
                return
            except Exception as exc:  # the sink already retried what it could; keep the reply going
                self.failed_operations += 1
                log.warning("reply.operation_failed", operation=type(op).__name__, final=final,
                            attempt=attempt, error=repr(exc))
                if attempt < attempts:
                    await asyncio.sleep(FINAL_RETRY_DELAY_S * 2 ** (attempt - 1))
