"""The streaming renderer's invariants, over arbitrary deltas and timings (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from core.ports import RenderLimits
from core.streaming import EMPTY_REPLY, Edit, Operation, Post, StreamRenderer, choose_cut

FENCE_PREFIX = re.compile(r"^```[^\n]{0,20}\n$")


def fence_lines(text: str) -> int:
    return sum(1 for line in text.split("\n") if line.lstrip().startswith("```"))


class Screen:
    """What a user would see: message index → current text, plus every op with its time."""

    def __init__(self) -> None:
        self.messages: dict[int, str] = {}
        self.log: list[tuple[float, Operation]] = []

    def apply(self, now: float, ops: list[Operation]) -> None:
        for op in ops:
            self.log.append((now, op))
            if isinstance(op, Post):
                assert op.index not in self.messages, "a message was posted twice"
            else:
                assert op.index in self.messages, "an edit of a message never posted"
            self.messages[op.index] = op.text


# Slack's shape under load: never edited, finished stretches posted as they complete.
POSTS_ONLY = RenderLimits(max_chars=200, split_chars=120, min_edit_interval_s=1.0, placeholder="…",
                          grow_by_edits=False, first_chunk_after_s=0.5)

pieces = st.sampled_from(["hello", " ", "world", "\n", "\n\n", "```", "```python\n", "x = 1\n", ". ",
                          "`", "ü", "a" * 50, "long sentence here. ", "\n```\n"])
deltas = st.lists(st.lists(pieces, min_size=1, max_size=8).map("".join), max_size=60)
gaps = st.lists(st.floats(min_value=0.0, max_value=2.0), max_size=60)
limits_strategy = st.sampled_from([
    RenderLimits(max_chars=200, split_chars=120, min_edit_interval_s=1.0, placeholder="thinking…",
                 streaming_indicator=" ▌"),
    RenderLimits(max_chars=100, split_chars=60, min_edit_interval_s=0.5, placeholder=None),
    RenderLimits(max_chars=2000, split_chars=1900, min_edit_interval_s=1.2, placeholder="…",
                 streaming_indicator=" ⚪"),
    POSTS_ONLY,
])
notes = st.sampled_from([None, "_(interrupted)_", "Sorry — models unavailable.", "n" * 150])


def run(limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None,
        ticks: bool = True) -> tuple[StreamRenderer, Screen]:
    renderer = StreamRenderer(limits)
    screen = Screen()
    now = 0.0
    screen.apply(now, renderer.start(now))
    for i, chunk in enumerate(chunks):
        now += timings[i] if i < len(timings) else 0.1
        if ticks:
            due = renderer.due_at()
            if due is not None and due <= now:
                screen.apply(max(due, 0.0), renderer.tick(max(due, 0.0)))
        screen.apply(now, renderer.feed(chunk, now))
    now += 0.01
    screen.apply(now, renderer.finish(now, note))
    return renderer, screen


class TestRendererInvariants:
    """Properties that hold for every reply, whatever the model sends and whenever."""

    @settings(max_examples=300, deadline=None)
    @given(limits=limits_strategy, chunks=deltas, timings=gaps, note=notes)
    def test_final_bodies_concatenate_to_the_model_text(
        self, limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Splitting, fences and notes never add, drop or reorder a character of the answer."""
        renderer, screen = run(limits, chunks, timings, note)
        assert "".join(seg.body + seg.unshown for seg in renderer.segments) == "".join(chunks)
        assert len(screen.messages) == len(renderer.segments)
        for index, seg in enumerate(renderer.segments):
            assert screen.messages[index] == seg.prefix + seg.body + seg.suffix
            assert seg.prefix == "" or FENCE_PREFIX.match(seg.prefix)
            assert not seg.unshown.strip(), "only whitespace may go unshown"
        if "".join(chunks).strip() and note is None:
            assert not any(EMPTY_REPLY in text for text in screen.messages.values())

    @settings(max_examples=300, deadline=None)
    @given(limits=limits_strategy, chunks=deltas, timings=gaps, note=notes)
    def test_no_text_exceeds_the_limit(
        self, limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Every post and edit fits the platform's message limit."""
        _, screen = run(limits, chunks, timings, note)
        assert all(len(op.text) <= limits.max_chars for _, op in screen.log)

    @settings(max_examples=300, deadline=None)
    @given(limits=limits_strategy, chunks=deltas, timings=gaps, note=notes)
    def test_code_fences_are_balanced_in_every_message(
        self, limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Each update and each final message closes what it opens."""
        _, screen = run(limits, chunks, timings, note)
        for _, op in screen.log:
            if op.text != limits.placeholder:
                assert fence_lines(op.text) % 2 == 0, op.text

    @settings(max_examples=300, deadline=None)
    @given(limits=limits_strategy, chunks=deltas, timings=gaps, note=notes)
    def test_updates_of_a_message_respect_the_interval_except_the_final_one(
        self, limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Non-final updates of one message are at least min_edit_interval_s apart."""
        _, screen = run(limits, chunks, timings, note)
        last: dict[int, float] = {}
        for at, op in screen.log:
            if op.text == limits.placeholder:
                continue
            final = isinstance(op, Edit) and op.final
            if op.index in last and not final:
                assert at - last[op.index] >= limits.min_edit_interval_s - 1e-9
            last[op.index] = at

    @settings(max_examples=300, deadline=None)
    @given(limits=limits_strategy, chunks=deltas, timings=gaps, note=notes)
    def test_the_final_state_is_never_a_placeholder(
        self, limits: RenderLimits, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Whatever happened, every message ends with text, never the placeholder or nothing."""
        _, screen = run(limits, chunks, timings, note)
        assert screen.messages
        for text in screen.messages.values():
            assert text.strip()
            assert text != limits.placeholder
            if limits.streaming_indicator:
                assert not text.endswith(limits.streaming_indicator)


    @settings(max_examples=300, deadline=None)
    @given(chunks=deltas, timings=gaps, note=notes)
    def test_a_posts_only_reply_is_never_edited(
        self, chunks: list[str], timings: list[float], note: str | None
    ) -> None:
        """Without edits every message is posted once, with its final text, and never ends mid-fence."""
        renderer, screen = run(POSTS_ONLY, chunks, timings, note)
        assert all(isinstance(op, Post) for _, op in screen.log)
        assert not any(op.text == POSTS_ONLY.placeholder for _, op in screen.log)
        assert "".join(seg.body + seg.unshown for seg in renderer.segments) == "".join(chunks)


class TestPostsOnly:
    """A reply that may not edit: finished stretches become messages as they complete."""

    def test_a_short_answer_is_one_message(self) -> None:
        """Text that completes before the first chunk is due goes out once, whole, at the end."""
        renderer = StreamRenderer(POSTS_ONLY)
        assert renderer.start(0.0) == []
        assert renderer.feed("Hello there. ", 0.1) == []
        assert renderer.feed("How are you?", 0.3) == []
        assert renderer.finish(0.4) == [Post(0, "Hello there. How are you?")]

    def test_finished_sentences_go_out_when_due(self) -> None:
        """The first message leaves first_chunk_after_s after the first text, at a clean boundary."""
        renderer = StreamRenderer(POSTS_ONLY)
        assert renderer.feed("One. Two", 0.0) == []
        assert renderer.due_at() == 0.5
        assert renderer.tick(0.5) == [Post(0, "One. ")]
        assert renderer.feed(" three.\n\nFour", 0.6) == []
        assert renderer.due_at() == 1.5
        assert renderer.tick(1.5) == [Post(1, "Two three.\n\n")]
        assert renderer.finish(1.6) == [Post(2, "Four")]

    def test_never_cuts_inside_a_code_block(self) -> None:
        """A boundary inside an open fence is not a place to end a message."""
        renderer = StreamRenderer(POSTS_ONLY)
        renderer.feed("```\nx = 1\n\ny = 2\n", 0.0)
        assert renderer.due_at() is None
        assert renderer.tick(5.0) == []
        assert renderer.feed("```\nDone.", 5.1) == [Post(0, "```\nx = 1\n\ny = 2\n```\n")]


class TestRendererBehaviour:
    """Concrete cases the properties do not spell out."""

    LIMITS = RenderLimits(max_chars=100, split_chars=60, min_edit_interval_s=1.0, placeholder="…")

    def test_first_token_replaces_the_placeholder_at_once(self) -> None:
        """The first text is visible as soon as it arrives, even right after the placeholder."""
        renderer = StreamRenderer(self.LIMITS)
        assert renderer.start(0.0) == [Post(0, "…")]
        assert renderer.feed("Hi", 0.05) == [Edit(0, "Hi")]

    def test_updates_are_held_back_until_due(self) -> None:
        """Within the interval nothing is sent; tick() sends the newest text when due."""
        renderer = StreamRenderer(self.LIMITS)
        assert renderer.feed("a", 0.0) == [Post(0, "a")]
        assert renderer.feed("b", 0.5) == []
        assert renderer.due_at() == 1.0
        assert renderer.tick(0.9) == []
        assert renderer.tick(1.0) == [Edit(0, "ab")]
        assert renderer.due_at() is None

    def test_long_text_splits_on_a_paragraph(self) -> None:
        """A reply past split_chars closes at the last paragraph break and continues."""
        renderer = StreamRenderer(self.LIMITS)
        text = "First paragraph is here.\n\n" + "Second one goes on and on and on and on and on."
        renderer.feed(text, 0.0)
        renderer.finish(1.0)
        assert renderer.segments[0].body == "First paragraph is here.\n\n"
        assert "".join(s.body for s in renderer.segments) == text

    def test_split_inside_code_closes_and_reopens_the_fence(self) -> None:
        """A code block cut in two is closed in one message and reopened with its language."""
        renderer = StreamRenderer(self.LIMITS)
        code = "```python\n" + "".join(f"x{i} = {i}\n" for i in range(20)) + "```\n"
        ops = renderer.feed(code, 0.0) + renderer.finish(1.0)
        finals = [op.text for op in ops if isinstance(op, Post) or (isinstance(op, Edit) and op.final)]
        assert len(renderer.segments) > 1
        assert renderer.segments[1].prefix == "```python\n"
        assert all(fence_lines(t) % 2 == 0 for t in finals)

    def test_empty_answer_ends_with_a_visible_text(self) -> None:
        """A model that says nothing still leaves a final message, not the placeholder."""
        renderer = StreamRenderer(self.LIMITS)
        renderer.start(0.0)
        assert renderer.finish(0.1) == [Edit(0, EMPTY_REPLY, final=True)]

    def test_apology_replaces_the_placeholder(self) -> None:
        """finish(note) with no text shows only the note."""
        renderer = StreamRenderer(self.LIMITS)
        renderer.start(0.0)
        assert renderer.finish(0.1, "Sorry.") == [Edit(0, "Sorry.", final=True)]

    def test_whitespace_after_a_split_is_not_a_message(self) -> None:
        """A reply ending in blank lines just past the split point leaves no "(no answer)" message."""
        limits = RenderLimits(max_chars=200, split_chars=100, min_edit_interval_s=0.0)
        renderer = StreamRenderer(limits)
        ops = renderer.feed("a" * 99 + "\n\n", 0.0) + renderer.finish(0.1)
        assert [op.text for op in ops if isinstance(op, Post)] == ["a" * 99 + "\n"]
        assert renderer.text == "a" * 99 + "\n\n"

    def test_choose_cut_prefers_clean_boundaries(self) -> None:
        """Paragraph, then line, then sentence, then word; a hard cut only without any."""
        assert choose_cut("aaaa\n\nbbbb\ncccc", 12) == 6
        assert choose_cut("aaaa bbbb cccc", 12) == 10
        assert choose_cut("a" * 30, 12) == 12

    def test_limits_without_room_for_fences_are_refused(self) -> None:
        """A split point too close to the hard limit could overflow when a fence is closed."""
        try:
            StreamRenderer(RenderLimits(max_chars=100, split_chars=99, min_edit_interval_s=0))
        except ValueError as exc:
            assert "no room" in str(exc)
        else:
            raise AssertionError("expected ValueError")
