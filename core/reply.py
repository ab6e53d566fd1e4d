"""`ReplyStream`: runs the streaming renderer against a `ReplySink`.

It owns the timing the pure renderer cannot: a timer that sends a held-back update when it falls
due, and one worker that talks to the sink so at most one platform call per reply is in flight.
While a call is in flight newer edits of the same message replace older queued ones (newest text
wins); posts and final edits are never dropped.

Posts go before queued edits: a post decides where a message sits in the conversation, an edit only
what it says. So once `end` has fixed the final text, `posts_landed` returns as soon as every
message of the reply exists, and the caller may let the conversation's next turn start while the
final edits are still on their way (`close` waits for those).

With a `ReplyJournal`, the reply is recorded in Redis from `open` to the moment the platform shows
its final state (see `core.journal`): a crash, or a final state the platform would not take before
the sink gave up, leaves it to whichever replica sweeps next. Core never retries or reposts a
failed operation itself: the sink's retries are the only ones within the turn, the journal's after.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable

import structlog

from core.errors import ReplyUndeliverable
from core.journal import JournalEntry, ReplyJournal
from core.ports import ReplySink
from core.streaming import Edit, Operation, Post, StreamRenderer

log = structlog.get_logger(__name__)



class ReplyStream:
    """One reply being streamed to one sink. Use `open`, `push` per delta, then `close` once."""

    def __init__(
        self, sink: ReplySink, *, clock: Callable[[], float] = time.monotonic,
        journal: ReplyJournal | None = None, bot: str = "", conversation: str = "",
    ) -> None:
        self._sink = sink
        self._journal = journal
        self._bot = bot
        self._conversation = conversation  # its key as JSON, recorded with the journal entry
        self._entry: JournalEntry | None = None  # this reply in the journal, while it has one
        self._renewal: asyncio.Task[None] | None = None
        self._journal_writes: set[asyncio.Task[None]] = set()
        self.final_failed = False  # a final state did not land: the journal finishes the reply
        self.taken_over = False  # another process claimed this reply in the journal
        self._final_recorded: asyncio.Task[None] | None = None  # the journal write of the final text
        self._journal_opened: asyncio.Task[None] | None = None
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
    def refs(self) -> list[str]:
        """The platform refs of the messages posted so far, in order (`ReplySink.post`)."""
        return [self._refs[i] for i in sorted(self._refs)]

    @property
    def journal_id(self) -> str | None:
        """This reply's id in the journal, while it has an entry there."""
        return self._entry.id if self._entry is not None else None

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
        # Off the model request's path: the worker waits for it before the first platform call,
        # so the journal knows the reply before anything of it is shown.
        self._journal_opened = asyncio.create_task(self._open_journal(), name="reply-journal-open")
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
        if self._journal is not None:
            final = [segment.text for segment in self._renderer.segments]
            self._final_recorded = asyncio.create_task(self._record_final(final), name="reply-journal-final")
            self._journal_writes.add(self._final_recorded)
            self._final_recorded.add_done_callback(self._journal_writes.discard)
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
        await self._settle_journal()
        try:
            await self._sink.finish()
        except Exception as exc:
            log.warning("reply.finish_failed", error=repr(exc))

    # -- the journal -----------------------------------------------------------------------

    async def _open_journal(self) -> None:
        target = self._sink.journal_target() if self._journal is not None else None
        if self._journal is None or target is None:
            return
        entry = JournalEntry(id=uuid.uuid4().hex, bot=self._bot, target=target,
                             indicator=self._renderer.limits.streaming_indicator,
                             conversation=self._conversation)
        if await self._journal.open(entry):
            self._entry = entry
            self._renewal = asyncio.create_task(self._renew(), name="reply-journal-renewal")

    async def _renew(self) -> None:
        assert self._journal is not None and self._entry is not None
        while True:
            await asyncio.sleep(self._journal.lease_s / 3)
            if await self._journal.record(self._entry) is False:
                self._taken_over()
                return

    async def _record_final(self, final: list[str]) -> None:
        if self._journal_opened is not None:
            await asyncio.shield(self._journal_opened)
        if self._journal is None or self._entry is None:
            return
        self._entry.final = final
        if await self._journal.record(self._entry) is False:
            self._taken_over()

    def _write_journal(self) -> asyncio.Task[None] | None:
        """Record the entry now, without holding the reply up (posts and the final text)."""
        if self._journal is None or self._entry is None:
            return None
        journal, entry = self._journal, self._entry

        async def write() -> None:
            if await journal.record(entry) is False:
                self._taken_over()

        task = asyncio.create_task(write(), name="reply-journal-write")
        self._journal_writes.add(task)
        task.add_done_callback(self._journal_writes.discard)
        return task

    def _taken_over(self) -> None:
        if not self.taken_over:
            self.taken_over = True
            log.warning("reply.taken_over", note="another process is finalising this reply")
            self.undeliverable = ReplyUndeliverable("another process took this reply over")

    async def _settle_journal(self) -> None:
        """After the last operation: forget the reply, or leave it due at once for a sweeper."""
        if self._renewal is not None:
            self._renewal.cancel()
        if self._journal_writes:
            await asyncio.gather(*self._journal_writes, return_exceptions=True)
        if self._journal is None or self._entry is None or self.taken_over:
            return
        if self.final_failed:
            log.warning("reply.handed_to_journal", reply=self._entry.id)
            await self._journal.record(self._entry, due_in_s=0.0)
        else:
            await self._journal.close(self._entry)

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
            if self._journal_opened is not None:
                await asyncio.shield(self._journal_opened)
            self._wake.clear()
            while self._queue:
                op = self._next_operation()
                try:
                    if self.undeliverable is not None:
                        continue  # nothing more can be shown: drop, do not repost
                    if isinstance(op, Edit) and not op.final and not await self._wait_for_turn(op):
                        continue
                    if self._final_recorded is not None:
                        # Final states go out only once the journal holds them under this owner's
                        # fence: a replica that claimed the reply meanwhile is not overwritten.
                        await asyncio.shield(self._final_recorded)
                        if self.undeliverable is not None:
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
        try:
            ref = self._refs.get(op.index)
            if isinstance(op, Post) or ref is None:
                # A post, or an edit of a message whose post failed: it has to exist first.
                ref = self._refs[op.index] = await self._sink.post(op.text)
                self._journal_shows(op.index, ref, op.text, write=True)
            else:
                await self._sink.edit(ref, op.text, final=op.final)
                self._journal_shows(op.index, ref, op.text, write=False)
            self._last_sent[op.index] = self._clock()
        except asyncio.CancelledError:
            raise
        except ReplyUndeliverable as exc:
            self.undeliverable = exc
            log.warning("reply.undeliverable", operation=type(op).__name__, error=str(exc))
        except Exception as exc:  # the sink already retried what it could; keep the reply going
            self.failed_operations += 1
            if final:
                self.final_failed = True  # the journal keeps trying after the turn
            log.warning("reply.operation_failed", operation=type(op).__name__, final=final, error=repr(exc))

    def _journal_shows(self, index: int, ref: str, text: str, *, write: bool) -> None:
        entry = self._entry
        if entry is None:
            return
        while len(entry.refs) <= index:
            entry.refs.append(None)
            entry.shown.append("")
        entry.refs[index] = ref
        entry.shown[index] = text
        if write:  # a new message: record where it is at once; edits ride on the next renewal
            self._write_journal()
