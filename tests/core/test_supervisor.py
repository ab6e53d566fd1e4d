"""ReplySupervisor: every adapter's reply tasks — log context, waiting until idle, the shutdown drain."""

from __future__ import annotations

import asyncio

import structlog

from core.supervisor import ReplySupervisor

CONTEXT = {"bot": "b1", "app_id": "app-1", "platform": "test"}


class TestSpawn:
    """A reply runs in a tracked task with the bot's log context bound."""

    async def test_log_context_is_bound_in_the_task_only(self) -> None:
        """The bot's context plus the task's own is bound inside the task, and nowhere else."""
        supervisor = ReplySupervisor(CONTEXT)
        seen: dict[str, object] = {}

        async def reply() -> str:
            seen.update(structlog.contextvars.get_contextvars())
            return "done"

        task = supervisor.spawn(reply(), name="r1", conversation="c1")
        assert await task == "done"
        assert seen == {**CONTEXT, "conversation": "c1"}
        assert "bot" not in structlog.contextvars.get_contextvars()

    async def test_wait_idle_waits_for_work_started_meanwhile(self) -> None:
        """A reply that starts its after-work before ending is idle only once that has ended too."""
        supervisor = ReplySupervisor(CONTEXT)
        order: list[str] = []
        reply_ended = asyncio.Event()

        async def after_work() -> None:
            await reply_ended.wait()  # runs on after the reply that started it
            order.append("after-work")

        async def reply() -> None:
            supervisor.spawn(after_work(), name="cleanup")
            order.append("reply")
            reply_ended.set()

        supervisor.spawn(reply(), name="r1")
        await supervisor.wait_idle()
        assert order == ["reply", "after-work"]


class TestDrain:
    """Shutdown: replies finish, or are cut short and end with what is left of the budget."""

    async def test_replies_that_finish_in_time_are_not_cut_short(self) -> None:
        """Nothing is cancelled and `on_cut_short` is not called when every reply ends in its grace."""
        supervisor = ReplySupervisor(CONTEXT)
        release = asyncio.Event()
        cut: list[bool] = []

        async def reply() -> str:
            await release.wait()
            return "answered"

        task = supervisor.spawn(reply(), name="r1")
        drain = asyncio.create_task(supervisor.drain(finish_s=30.0, total_s=60.0,
                                                     on_cut_short=lambda: cut.append(True)))
        release.set()  # neither the reply nor the drain has run yet: the reply ends inside the grace
        report = await drain
        assert await task == "answered" and (report.cut_short, report.unfinished, cut) == (0, 0, [])

    async def test_late_replies_are_cut_short_then_leave_a_final_message(self) -> None:
        """A reply still running at the end of its grace is cancelled after `on_cut_short`; what it
        starts while ending (its final message) is waited for; waited-for intake is never cancelled."""
        supervisor = ReplySupervisor(CONTEXT)
        events: list[str] = []
        intake_done = asyncio.Event()

        async def final_message() -> None:
            events.append("final message")

        async def reply() -> None:
            try:
                await asyncio.Event().wait()  # a model that never answers
            except asyncio.CancelledError:
                events.append("cancelled")
                supervisor.spawn(final_message(), name="final")
                raise

        async def intake() -> None:
            await intake_done.wait()

        supervisor.spawn(reply(), name="r1")
        waited = asyncio.create_task(intake())
        supervisor.track(waited, cancel_at_drain=False)
        report = await supervisor.drain(finish_s=0.05, total_s=30.0,
                                        on_cut_short=lambda: events.append("cut short"))
        assert events == ["cut short", "cancelled", "final message"]
        assert (report.cut_short, report.unfinished) == (1, 0)
        assert not waited.done()
        intake_done.set()
        await waited

    async def test_what_outlives_the_budget_is_cancelled(self) -> None:
        """A cut-short reply that will not end within the budget is cancelled again and reported."""
        supervisor = ReplySupervisor(CONTEXT)
        cancels: list[int] = []

        async def stubborn() -> None:
            while True:
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    cancels.append(1)
                    if len(cancels) > 1:
                        raise

        task = supervisor.spawn(stubborn(), name="r1")
        report = await supervisor.drain(finish_s=0.01, total_s=0.05)
        assert task.cancelled() and len(cancels) == 2
        assert (report.cut_short, report.unfinished) == (1, 1)
