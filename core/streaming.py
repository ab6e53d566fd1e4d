"""The streaming renderer: text deltas in, post/edit operations out.

A pure state machine with the clock passed in: it does no I/O and never sleeps, so property tests
can drive it through any sequence of deltas and timings. It guarantees, for every reply:

- the bodies of the final messages, concatenated, are exactly the model's text;
- no operation's text exceeds `RenderLimits.max_chars`;
- code fences are balanced in every message (closed at a split, reopened in the next message);
- two updates of one message are at least `min_edit_interval_s` apart, except the final one;
- the last state of every message is final text, never the placeholder;
- with `grow_by_edits=False`, no message is ever edited: each is posted once, with its final text.

What a message shows is `prefix + body + suffix (+ indicator while streaming)`: `prefix` reopens a
code fence the previous message had to close, `suffix` closes one or carries the closing note.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.ports import RenderLimits

FENCE = "```"
MAX_FENCE_INFO_CHARS = 20  # a reopened fence keeps at most this much of the language tag
# Room the renderer needs beyond `split_chars`: a reopened fence, a closing fence, the indicator.
FENCE_OVERHEAD_CHARS = len(FENCE) + MAX_FENCE_INFO_CHARS + 1 + len("\n" + FENCE)
EMPTY_REPLY = "(no answer)"
NOTE_SEPARATOR = "\n\n"
# Preferred places to split a long reply, best first; each cut lands after the separator.
CLEAN_BOUNDARIES = ("\n\n", "\n", ". ", "! ", "? ", " ")
# A clean boundary is only taken past this share of the limit: cutting earlier wastes messages.
MIN_CUT_FRACTION = 0.3
# Where a posts-only reply may end a message early, best first: never mid-sentence.
CHUNK_BOUNDARIES = ("\n\n", "\n", ". ", "! ", "? ")


@dataclass(frozen=True)
class Post:
    """Post message number `index` of this reply with `text`."""

    index: int
    text: str


@dataclass(frozen=True)
class Edit:
    """Replace the text of message `index`; `final` marks its last update."""

    index: int
    text: str
    final: bool = False


Operation = Post | Edit


@dataclass
class Segment:
    """One platform message of the reply."""

    prefix: str = ""  # reopened fence
    body: str = ""  # model text
    suffix: str = ""  # closing fence and/or note, set when the message is closed
    unshown: str = ""  # trailing whitespace of the model text, invisible at a message's end
    posted: bool = False
    showing_placeholder: bool = False
    last_update_at: float | None = None
    last_text: str | None = None

    @property
    def text(self) -> str:
        return self.prefix + self.body + self.suffix


@dataclass
class _FenceState:
    open: bool = False
    info: str = ""


def _fence_state(start: _FenceState, text: str) -> _FenceState:
    """Whether `text`, starting in `start`, ends inside a code fence (and with which tag)."""
    state = _FenceState(start.open, start.info)
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(FENCE):
            if state.open:
                state = _FenceState(False, "")
            else:
                state = _FenceState(True, stripped[len(FENCE):].strip()[:MAX_FENCE_INFO_CHARS])
    return state


def _closing_fence(text: str) -> str:
    return FENCE if text.endswith("\n") or not text else "\n" + FENCE


def choose_cut(body: str, limit: int) -> int:
    """Where to end a message whose body is longer than `limit`: after the best clean boundary
    past `MIN_CUT_FRACTION` of it, else a hard cut at `limit`."""
    window_start = max(1, int(limit * MIN_CUT_FRACTION))
    for boundary in CLEAN_BOUNDARIES:
        found = body.rfind(boundary, window_start, limit)
        if found != -1 and found + len(boundary) <= limit:
            return found + len(boundary)
    return limit


@dataclass
class StreamRenderer:
    """Turns deltas into `Post`/`Edit` operations within a platform's `RenderLimits`."""

    limits: RenderLimits
    segments: list[Segment] = field(default_factory=list)
    _fence_at_segment_start: _FenceState = field(default_factory=_FenceState)
    _finished: bool = False
    _first_text_at: float | None = None  # posts-only: when the first visible text arrived
    _last_chunk_at: float | None = None  # posts-only: when the last early message went out

    def __post_init__(self) -> None:
        needed = self.limits.split_chars + FENCE_OVERHEAD_CHARS + len(self.limits.streaming_indicator)
        if needed > self.limits.max_chars:
            raise ValueError(
                f"split_chars {self.limits.split_chars} leaves no room for fences and the indicator "
                f"within max_chars {self.limits.max_chars} (needs {needed})"
            )
        self.segments.append(Segment())

    def adopt_limits(self, limits: RenderLimits) -> bool:
        """Take a sink's new presentation (indicator, placeholder, fence closing, pacing) mid-reply,
        e.g. a native stream that fell back to edits. Sizes must stay: the split already made
        depends on them. Returns whether the new limits were taken."""
        old = self.limits
        same_sizes = (limits.max_chars, limits.split_chars) == (old.max_chars, old.split_chars)
        if same_sizes:
            self.limits = limits
        return same_sizes

    @property
    def text(self) -> str:
        """Everything the model said so far."""
        return "".join(s.body + s.unshown for s in self.segments)

    @property
    def finished(self) -> bool:
        return self._finished

    def start(self, now: float) -> list[Operation]:
        """Before the first token: post the placeholder, if the platform uses one."""
        current = self.segments[-1]
        # A posts-only reply never edits, so a placeholder could never be replaced.
        if self.limits.placeholder is None or current.posted or not self.limits.grow_by_edits:
            return []
        current.posted = True
        current.showing_placeholder = True
        current.last_text = self.limits.placeholder
        return [Post(len(self.segments) - 1, self.limits.placeholder)]

    def feed(self, delta: str, now: float) -> list[Operation]:
        """Add model text; returns what to send now (possibly nothing, if an update is not due)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        ops: list[Operation] = []
        self.segments[-1].body += delta
        if self._first_text_at is None and delta.strip():
            self._first_text_at = now
        ops.extend(self._split_overflow(now))
        ops.extend(self._update_current(now))
        return ops

    def due_at(self) -> float | None:
        """When a held-back update of the current message may be sent, or None if nothing waits."""
        current = self.segments[-1]
        if not self.limits.grow_by_edits:
            return None if self._finished or self._chunk_cut(current) is None else self._chunk_due()
        if self._finished or not self._has_unsent(current):
            return None
        if current.last_update_at is None:
            return 0.0
        return current.last_update_at + self.limits.min_edit_interval_s

    def tick(self, now: float) -> list[Operation]:
        """Send a held-back update if its time has come."""
        if self._finished:
            return []
        return self._update_current(now)

    def finish(self, now: float, note: str | None = None) -> list[Operation]:
        """Complete the reply: final text everywhere, with `note` (interruption, apology, footer)
        after the text. Always ends every message in a final state."""
        if self._finished:
            return []
        self._finished = True
        ops: list[Operation] = []
        current = self.segments[-1]
        note_text = note.strip() if note else ""
        if not note_text and len(self.segments) > 1 and not current.posted and not current.body.strip():
            # A split left only whitespace for a last message: it would show as "(no answer)".
            self.segments.pop()
            self.segments[-1].unshown = current.body
            return ops
        closing = self._closing_suffix(current)
        shown = current.prefix + current.body + closing
        if note_text:
            with_note = closing + (NOTE_SEPARATOR if shown.strip() else "") + note_text
            if len(current.prefix + current.body + with_note) <= self.limits.max_chars:
                current.suffix = with_note
                return self._send_final(current, len(self.segments) - 1)
            # The note does not fit: close this message, carry the note in one of its own.
            current.suffix = closing
            ops.extend(self._send_final(current, len(self.segments) - 1))
            self.segments.append(Segment(suffix=note_text[: self.limits.max_chars]))
            ops.extend(self._send_final(self.segments[-1], len(self.segments) - 1))
            return ops
        current.suffix = closing
        ops.extend(self._send_final(current, len(self.segments) - 1))
        return ops

    # -- internals -------------------------------------------------------------------------

    def _has_unsent(self, segment: Segment) -> bool:
        if not (segment.prefix + segment.body).strip():
            return False
        return segment.showing_placeholder or segment.last_text != self._live_text(segment)

    def _closing_suffix(self, segment: Segment) -> str:
        state = _fence_state(self._fence_at_segment_start, segment.body)
        return _closing_fence(segment.prefix + segment.body) if state.open else ""

    def _live_text(self, segment: Segment) -> str:
        text = segment.prefix + segment.body
        if self.limits.close_open_fences:
            text += self._closing_suffix(segment)
        return text + self.limits.streaming_indicator

    def _split_overflow(self, now: float) -> list[Operation]:
        ops: list[Operation] = []
        while True:
            current = self.segments[-1]
            room = self.limits.split_chars - len(current.prefix)
            if len(current.body) <= room:
                return ops
            cut = choose_cut(current.body, room)
            rest = current.body[cut:]
            current.body = current.body[:cut]
            end_state = _fence_state(self._fence_at_segment_start, current.body)
            current.suffix = _closing_fence(current.prefix + current.body) if end_state.open else ""
            ops.extend(self._send_final(current, len(self.segments) - 1))
            self._fence_at_segment_start = end_state
            prefix = f"{FENCE}{end_state.info}\n" if end_state.open else ""
            self.segments.append(Segment(prefix=prefix, body=rest))

    def _send_final(self, segment: Segment, index: int) -> list[Operation]:
        text = segment.text
        if not text.strip():
            text = segment.text + EMPTY_REPLY
            segment.suffix += EMPTY_REPLY
        segment.last_text = text
        segment.showing_placeholder = False
        if segment.posted:
            return [Edit(index, text, final=True)]
        segment.posted = True
        return [Post(index, text)]

    def _chunk_due(self) -> float:
        """Posts-only: when the next early message may go out."""
        if self._last_chunk_at is not None:
            return self._last_chunk_at + self.limits.min_edit_interval_s
        first = self._first_text_at if self._first_text_at is not None else 0.0
        return first + self.limits.first_chunk_after_s

    def _chunk_cut(self, segment: Segment) -> int | None:
        """Posts-only: the end of the longest finished stretch of `segment` (a paragraph, line or
        sentence) that leaves no code fence open, or None."""
        body = segment.body
        for boundary in CHUNK_BOUNDARIES:
            end = len(body)
            while (found := body.rfind(boundary, 0, end)) > 0:
                cut = found + len(boundary)
                if body[:cut].strip() and not _fence_state(self._fence_at_segment_start, body[:cut]).open:
                    return cut
                end = found
        return None

    def _post_chunk(self, now: float) -> list[Operation]:
        """Posts-only: send what is finished as a message of its own, if one is due."""
        current = self.segments[-1]
        if now < self._chunk_due():
            return []
        cut = self._chunk_cut(current)
        if cut is None:
            return []
        rest = current.body[cut:]
        current.body = current.body[:cut]
        current.suffix = ""
        ops = self._send_final(current, len(self.segments) - 1)
        self._fence_at_segment_start = _FenceState()
        self.segments.append(Segment(body=rest))
        self._last_chunk_at = now
        return ops

    def _update_current(self, now: float) -> list[Operation]:
        if not self.limits.grow_by_edits:
            return self._post_chunk(now)
        current = self.segments[-1]
        # The cheap time check first: rendering the live text scans the message for fences.
        if current.last_update_at is not None and (
            now - current.last_update_at < self.limits.min_edit_interval_s
        ):
            return []
        if not self._has_unsent(current):
            return []
        text = self._live_text(current)
        index = len(self.segments) - 1
        current.last_update_at = now
        current.last_text = text
        current.showing_placeholder = False
        if current.posted:
            return [Edit(index, text)]
        current.posted = True
        return [Post(index, text)]
