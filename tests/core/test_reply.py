"""ReplyStream: one platform call in flight, newest text wins, the final state always lands."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from core.ports import RenderLimits
from core.reply import ReplyStream
from tests.fakes.sinks import RecordingSink

LIMITS = RenderLimits(max_chars=500, split_chars=400, min_edit_interval_s=0.0, placeholder="…")


@dataclass
class SlowSink(RecordingSink):
    """Each edit waits until the test releases it, like a rate-limited platform."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    edit_started: asyncio.Event = field(default_factory=asyncio.Event)

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.edit_started.set()
        await self.release.wait()
        self.in_flight -= 1
        await super().edit(ref, text, final=final)


class TestReplyStream:
    """The driver between the renderer and a sink."""

    async def test_newest_text_wins_while_an_edit_is_in_flight(self) -> None:
        """Deltas arriving during a slow edit collapse into one newer edit; the final one lands."""
        sink = SlowSink(limits=LIMITS)
        reply = ReplyStream(sink)
        await reply.open()
        await reply.push("a")
        async with asyncio.timeout(5):
            await sink.edit_started.wait()
        for piece in "bcdefgh":
            await reply.push(piece)
        sink.release.set()
        await reply.close()
        texts = [c.text for c in sink.calls if c.kind == "edit"]
        assert texts[0] == "a" and texts[-1] == "abcdefgh"
        assert len(texts) <= 3, texts
        assert sink.max_in_flight == 1
        assert sink.final_texts == ["abcdefgh"]

    async def test_a_failed_growing_edit_is_carried_by_the_next(self) -> None:
        """A platform error on an in-progress edit is logged; the final text still lands."""
        failed = asyncio.Event()

        class FailFirstGrowingEdit(RecordingSink):
            async def edit(self, ref: str, text: str, *, final: bool) -> None:
                if not final and not failed.is_set():
                    failed.set()
                    raise RuntimeError("edit failed (scripted)")
                await super().edit(ref, text, final=final)

        sink = FailFirstGrowingEdit(limits=LIMITS)
        reply = ReplyStream(sink)
        await reply.open()
        await reply.push("hello")
        async with asyncio.timeout(5):
            await failed.wait()
        await reply.push(" world")
        await reply.close()
        assert sink.final_texts == ["hello world"]
        assert reply.failed_operations == 1 and not reply.final_failed

    async def test_a_failed_final_edit_is_left_to_the_journal_not_reposted(self) -> None:
        """Core neither retries nor reposts a final edit the sink gave up on: one message remains,
        and the reply says its final state did not land (the journal delivers it)."""
        sink = RecordingSink(limits=LIMITS, fail_edits=10)
        reply = ReplyStream(sink)
        await reply.open()
        await reply.push("hello")
        await reply.close()
        assert [c.kind for c in sink.calls].count("post") == 1
        assert reply.final_failed

    async def test_held_back_update_is_sent_by_the_timer(self) -> None:
        """With an interval, text that arrived early is shown when due, without a new delta."""
        limits = RenderLimits(max_chars=500, split_chars=400, min_edit_interval_s=0.05, placeholder=None)
        sink = RecordingSink(limits=limits)
        reply = ReplyStream(sink)
        await reply.open()
        await reply.push("first")
        await reply.push(" second")
        async with asyncio.timeout(5):
            await sink.edited.wait()
        assert sink.final_texts == ["first second"]
        await reply.close()
        assert sink.calls[-2].final


class TestLimitsChange:
    """A sink may change its presentation mid-reply (a native stream that fell back to edits)."""

    async def test_new_indicator_is_adopted_on_the_next_delta(self) -> None:
        """After the sink's limits change, updates use the new indicator; sizes may not change."""
        plain = RenderLimits(max_chars=500, split_chars=400, min_edit_interval_s=0.0)
        marked = RenderLimits(max_chars=500, split_chars=400, min_edit_interval_s=0.0, streaming_indicator=" ▌")
        sink = RecordingSink(limits=plain)
        reply = ReplyStream(sink)
        await reply.open()
        await reply.push("one")
        sink.limits = marked
        await reply.push(" two")
        async with asyncio.timeout(5):
            await sink.edited.wait()  # let the growing edit go out before the final one supersedes it
        await reply.close()
        texts = [c.text for c in sink.calls if c.kind in ("post", "edit")]
        assert texts == ["one", "one two ▌", "one two"]


class TestSendSpacing:
    """Edits of one message are spaced by when the platform took them, not only when rendered."""

    async def test_a_slow_post_does_not_bunch_the_next_edit(self) -> None:
        """A post that takes long to land is followed by an edit no sooner than the interval after it."""
        limits = RenderLimits(max_chars=500, split_chars=400, min_edit_interval_s=0.2)
        release = asyncio.Event()

        class SlowPostSink(RecordingSink):
            async def post(self, text: str) -> str:
                await release.wait()  # the platform takes its time
                return await super().post(text)

        sink = SlowPostSink(limits=limits)
        reply = ReplyStream(sink)
        await reply.open()
        asyncio.get_running_loop().call_later(0.3, release.set)
        await reply.push("a")
        await reply.push("b")  # due 0.2 s after the post was made, while the post is still in flight
        async with asyncio.timeout(5):
            await sink.edited.wait()
        await reply.close()
        post, growing = sink.calls[1], sink.calls[2]
        assert (post.kind, growing.kind, growing.text) == ("post", "edit", "ab")
        assert growing.at - post.at >= 0.2 - 0.005
