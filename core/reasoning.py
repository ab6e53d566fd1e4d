"""`ThinkFilter`: keeps a model's `<think>…</think>` reasoning out of the answer text.

Reasoning models (DeepSeek-R1, QwQ, Qwen3 behind a server without a reasoning parser) write their
chain of thought into the content stream between `<think>` and `</think>`. The filter turns that
stream, chunk by chunk, into the answer alone. It is pure (no I/O, no clock) so property tests can
split a stream anywhere; `core.chat_api` runs one per attempt. Reasoning that arrives in a delta field
of its own (`reasoning_content`, `reasoning`) never passes through here: the chat client does not
read those fields as text, it only tells the filter reasoning happened (`mark_reasoning`).

The rules, each one a decision:
- Tags are `<think>` and `</think>` exactly, matched ASCII-case-insensitively (the models emit them
  lowercase; `<THINK>` is no likelier to be prose). Anything else (`<thinking>`, `<think >`) is text.
- Everything from `<think>` to the next `</think>` is hidden, wherever in the stream, as often as it
  occurs; a block still open when the stream ends is hidden to the end. A `<think>` inside a block is
  hidden text, not nesting.
- A `</think>` with no block open is dropped and the text around it shown. Some chat templates open
  the block in the prompt, so the output starts inside it; what was streamed before the tag cannot be
  taken back, but the tag itself is never shown. The price of both rules: an answer cannot show the
  literal tags, even in a code block.
- Whitespace: once a tag (or separate reasoning) came before the answer's first non-whitespace
  character, the whitespace before that character is dropped, so an answer never opens with the blank
  lines that follow `</think>`. When the attempt continues text already shown (`continuing`), only
  line breaks are dropped, so a space between the shown text and the continuation survives. With no
  tag at all the text passes unchanged.
- `opened`: for a model seen to stream a stray `</think>` (its template opens the block in the
  prompt), the stream starts inside a block. Its text is held until `</think>` comes (then dropped
  as reasoning); a stream that ends without one was an answer after all, released whole at `flush`
  (unless it was cut off by the length limit: then it is reasoning, and stays hidden).
- Held back: only a chunk's trailing text that could still become a tag (`<`, `<th`, `</thin`…) and
  whitespace before the answer's first character (invisible either way). `flush` at the end of the
  stream releases what turned out not to be a tag.
"""

from __future__ import annotations

import string

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"
# ASCII-only folding keeps indices stable: `str.lower` may change a string's length ("İ").
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_LINE_BREAKS = str.maketrans("", "", "\r\n")
_OUTSIDE_TAGS = (OPEN_TAG, CLOSE_TAG)  # outside a block a stray closing tag is markup too
_INSIDE_TAGS = (CLOSE_TAG,)


class ThinkFilter:
    """One answer stream in, its visible text out: `feed` each chunk, `flush` once at the end."""

    def __init__(self, *, continuing: bool = False, opened: bool = False) -> None:
        self._continuing = continuing  # this attempt carries on text the user already sees
        self._hiding = opened  # inside a `<think>` block
        self._opened = opened  # inside the block the prompt opened: its text is held, not dropped
        self._opened_at_start = opened
        self._held: list[str] = []
        self.closed_opened = False  # the prompt-opened block was closed: the model reasons first
        self._pending = ""  # the end of the last chunk, while it may still become a tag
        self._lead = ""  # whitespace before the answer's first character, held until it comes
        self._after_reasoning = False  # a tag or separate reasoning came before the answer
        self._answered = False  # a non-whitespace answer character has been let through
        self._emitted = 0  # characters let through so far
        # Characters let through before the last stray `</think>`: the model's template opened the
        # block in the prompt, so they were reasoning shown as it streamed (None: no stray tag).
        self.reasoning_shown: int | None = None

    @property
    def opened(self) -> bool:
        """Whether this stream started inside a prompt-opened block."""
        return self._opened_at_start

    @property
    def answered(self) -> bool:
        """Whether any answer text (not only whitespace) has come out."""
        return self._answered

    def feed(self, text: str) -> str:
        """The visible part of the next chunk (possibly empty)."""
        if "<" not in text and self._answered and not self._hiding and not self._pending:
            self._emitted += len(text)
            return text  # the common case once the answer flows: every tag starts with "<"
        buffer = self._pending + text
        folded = buffer.translate(_ASCII_LOWER)
        visible: list[str] = []
        start = 0
        while True:
            tags = _INSIDE_TAGS if self._hiding else _OUTSIDE_TAGS
            found = _next_tag(folded, start, tags)
            if found is None:
                keep = _partial_tag_length(folded, start, tags)
                end = len(buffer) - keep
                self._let_through(buffer[start:end], visible)
                self._pending = buffer[end:]
                out = "".join(visible)
                self._emitted += len(out)
                return out
            at, tag = found
            self._let_through(buffer[start:at], visible)
            if tag == CLOSE_TAG and not self._hiding:
                self.reasoning_shown = self._emitted + sum(len(v) for v in visible)
            if tag == CLOSE_TAG and self._opened:
                self._opened, self._held, self.closed_opened = False, [], True
            start = at + len(tag)
            self._hiding = tag == OPEN_TAG
            self._after_reasoning = True

    def mark_reasoning(self) -> None:
        """Reasoning arrived in a field of its own: like a closed block, it comes before the answer."""
        self._after_reasoning = True

    def flush(self, *, release_opened: bool = True) -> str:
        """At the end of the stream: the held-back text that turned out to be answer text. The end
        of an unclosed block stays hidden, except a prompt-opened one with `release_opened` (the
        model answered without reasoning)."""
        visible: list[str] = []
        if self._opened:
            held, self._held = "".join(self._held) + self._pending, []
            self._pending, self._opened, self._hiding = "", False, False
            if release_opened:
                self._let_through(held, visible)
        self._let_through(self._pending, visible)
        self._pending = ""
        if not self._answered:
            visible.append(self._trimmed_lead())
            self._lead = ""
        out = "".join(visible)
        self._emitted += len(out)
        return out

    def _let_through(self, text: str, visible: list[str]) -> None:
        if self._opened and text:
            self._held.append(text)
            return
        if self._hiding or not text:
            return
        if self._answered:
            visible.append(text)
            return
        answer = text.lstrip()
        if not answer:
            self._lead += text
            return
        self._lead += text[: len(text) - len(answer)]
        visible.append(self._trimmed_lead() + answer)
        self._lead = ""
        self._answered = True

    def _trimmed_lead(self) -> str:
        if not self._after_reasoning:
            return self._lead
        return self._lead.translate(_LINE_BREAKS) if self._continuing else ""


def _next_tag(folded: str, start: int, tags: tuple[str, ...]) -> tuple[int, str] | None:
    """The first of `tags` in `folded` from `start`: (position, tag)."""
    best: tuple[int, str] | None = None
    for tag in tags:
        at = folded.find(tag, start)
        if at != -1 and (best is None or at < best[0]):
            best = (at, tag)
    return best


def _partial_tag_length(folded: str, start: int, tags: tuple[str, ...]) -> int:
    """How many characters at the end of `folded[start:]` are the beginning of one of `tags`."""
    longest = min(len(folded) - start, max(len(tag) for tag in tags) - 1)
    for length in range(longest, 0, -1):
        tail = folded[len(folded) - length :]
        if any(tag.startswith(tail) for tag in tags):
            return length
    return 0
