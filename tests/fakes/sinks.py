"""`RecordingSink`: an in-memory `ReplySink` that keeps what a user would see, for engine tests,
adapter-independent benchmarks and property tests of the reply driver."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from core.ports import RenderLimits
from core.types import ReplyInfo

DEFAULT_TEST_LIMITS = RenderLimits(
    max_chars=2000, split_chars=1900, min_edit_interval_s=0.0, placeholder="_thinking…_",
    streaming_indicator=" ▌",
)


@dataclass
class SinkCall:
    kind: str  # "start", "post", "edit", "finish"
    ref: str | None
    text: str | None
    final: bool
    at: float


@dataclass
class RecordingSink:
    """Messages by ref with their current text, and every call with its time."""

    limits: RenderLimits = DEFAULT_TEST_LIMITS
    footer_text: str | None = None
    fail_edits: int = 0  # the next N edits raise, as a platform error would
    target: dict[str, str] | None = None  # what the reply journal records as where the reply lives
    messages: dict[str, str] = field(default_factory=dict)
    calls: list[SinkCall] = field(default_factory=list)
    footers: list[ReplyInfo] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    edited: asyncio.Event = field(default_factory=asyncio.Event)  # set by every successful edit
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    first_text: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self.calls.append(SinkCall("start", None, None, False, time.monotonic()))
        self.started.set()

    async def post(self, text: str) -> str:
        ref = f"m{len(self.messages) + 1}"
        self.messages[ref] = text
        self.calls.append(SinkCall("post", ref, text, False, time.monotonic()))
        self._note_text(text)
        return ref

    async def edit(self, ref: str, text: str, *, final: bool) -> None:
        if self.fail_edits > 0:
            self.fail_edits -= 1
            raise RuntimeError("edit failed (scripted)")
        self.messages[ref] = text
        self.calls.append(SinkCall("edit", ref, text, final, time.monotonic()))
        self.edited.set()
        self._note_text(text)

    async def finish(self) -> None:
        self.calls.append(SinkCall("finish", None, None, False, time.monotonic()))
        self.finished.set()

    def footer(self, info: ReplyInfo) -> str | None:
        self.footers.append(info)
        return self.footer_text

    def journal_target(self) -> dict[str, str] | None:
        return self.target

    def _note_text(self, text: str) -> None:
        if text != self.limits.placeholder:
            self.first_text.set()

    @property
    def final_texts(self) -> list[str]:
        return list(self.messages.values())

    @property
    def visible(self) -> str:
        """Everything the user sees, messages joined in order."""
        return "".join(self.messages.values())
