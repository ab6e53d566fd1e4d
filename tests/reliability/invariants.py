"""The invariants every fault must keep, checked over what users see at the fake platforms.

One checker for the whole fault suite and the soak: given every user message sent (`Sent`, with the
bot's final messages answering it filled in), the chat API's recorded requests, the captured log
text and the secrets of the run, it counts what each message got — an answer, a continued answer,
an interrupted one or an apology — and every broken invariant:

- exactly one final reply per user message;
- no message left on a placeholder or a streaming cursor;
- no text lost or duplicated across the messages of a split reply;
- no conversation's content in another conversation's chat request;
- no API key or platform token in any log line;
- the bot alive at the end (the caller says whether it was).

What a reply should say is derived from the chat requests the fake recorded (the fake's answer is a
pure function of the request), so a fault that changes history or falls back changes the
expectation with it, and the check never needs to know which fault ran.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.discord.sink import DISCORD_STREAMING_INDICATOR
from adapters.slack.sink import STREAMING_INDICATOR as SLACK_STREAMING_INDICATOR
from core.chat_api import CONTINUE_PROMPT
from core.engine import (
    APOLOGY_BAD_KEY,
    APOLOGY_BAD_MODEL,
    APOLOGY_INTERNAL,
    APOLOGY_RATE_LIMITED,
    APOLOGY_REJECTED,
    APOLOGY_UNAVAILABLE,
    INTERRUPTED_NOTE,
    TRUNCATED_NOTE,
)
from core.streaming import EMPTY_REPLY, NOTE_SEPARATOR
from tests.fakes.chat_api import RecordedRequest, default_reply

APOLOGIES = frozenset({APOLOGY_BAD_KEY, APOLOGY_BAD_MODEL, APOLOGY_INTERNAL, APOLOGY_RATE_LIMITED,
                       APOLOGY_REJECTED, APOLOGY_UNAVAILABLE})
NOTES = frozenset({INTERRUPTED_NOTE, TRUNCATED_NOTE})
# Slack's fallback footer, and Discord's subtext footer line.
FOOTER = re.compile(r"^(_\(answered by [^)\n]+\)_|-# [^\n]+)$")
CURSORS = (SLACK_STREAMING_INDICATOR, DISCORD_STREAMING_INDICATOR)

ONE_REPLY = "exactly one final reply"
NO_CURSOR = "no placeholder or cursor left"
NOTHING_LOST = "no text lost or duplicated"
ISOLATED = "no content of another conversation"
NO_SECRET = "no key or token in logs"
ALIVE = "bot alive at the end"
INVARIANTS = (ONE_REPLY, NO_CURSOR, NOTHING_LOST, ISOLATED, NO_SECRET, ALIVE)
OUTCOMES = ("answered", "continued", "interrupted", "apology")


@dataclass
class Sent:
    """One user message as sent to a fake platform, and the bot's final messages answering it."""

    platform: str
    conversation: str  # the conversation's marker, also present in `text`
    token: str  # unique to this message, present in `text`
    text: str
    handle: Any = None  # the platform payload, for the harness that sent it
    replies: list[str] = field(default_factory=list)


@dataclass
class Report:
    """Counts over a run: what users got, and each invariant's violations (with examples)."""

    messages: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    max_examples: int = 20

    def violate(self, invariant: str, detail: str) -> None:
        self.violations[invariant] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(f"{invariant}: {detail}")

    def merge(self, other: Report) -> None:
        self.messages += other.messages
        self.outcomes.update(other.outcomes)
        for invariant, count in other.violations.items():
            self.violations[invariant] += count
        self.examples.extend(other.examples[: max(0, self.max_examples - len(self.examples))])

    @property
    def clean(self) -> bool:
        return not self.violations

    def assert_clean(self) -> None:
        assert self.clean, "invariants broken:\n" + "\n".join(self.examples)

    def lines(self) -> list[str]:
        """The report as a small table: outcomes, then each invariant's violations."""
        out = [f"user messages: {self.messages}"]
        out += [f"  {name:<12} {self.outcomes.get(name, 0)}" for name in OUTCOMES]
        out.append("invariant violations:")
        out += [f"  {name:<36} {self.violations.get(name, 0)}" for name in INVARIANTS]
        out += [f"  e.g. {example}" for example in self.examples[:10]]
        return out


def _messages(request: RecordedRequest) -> list[dict[str, Any]]:
    body = request.body or {}
    return [m for m in body.get("messages") or [] if isinstance(m, dict)]


def asked_text(request: RecordedRequest) -> str:
    """The user message a request answers: its last user message that is not a continuation prompt."""
    for message in reversed(_messages(request)):
        if message.get("role") == "user" and message.get("content") != CONTINUE_PROMPT:
            return str(message.get("content"))
    return ""


def _is_continuation(request: RecordedRequest) -> bool:
    return any(m.get("content") == CONTINUE_PROMPT for m in _messages(request))


def _answer_of(request: RecordedRequest) -> str:
    """What the fake streams for this request when it streams at all."""
    behaviour = request.behaviour
    if behaviour is not None and behaviour.text is not None:
        return behaviour.text
    return default_reply(request.body)


def _shown_before(request: RecordedRequest) -> str:
    """A continuation request carries the text already shown as its assistant message."""
    assistants = [m for m in _messages(request) if m.get("role") == "assistant"]
    return str(assistants[-1].get("content")) if assistants else ""


def _is_note_line(line: str) -> bool:
    return line in NOTES or bool(FOOTER.match(line))


def split_notes(parts: Sequence[str]) -> tuple[str, list[str]]:
    """The model text of a reply and its closing lines (notes, footers, or an apology alone)."""
    joined = "".join(parts)
    if joined in APOLOGIES:
        return "", [joined]
    if len(parts) > 1 and all(_is_note_line(line) for line in parts[-1].split("\n")):
        return "".join(parts[:-1]), parts[-1].split("\n")  # a note that did not fit went on its own
    head, separator, tail = joined.rpartition(NOTE_SEPARATOR)
    if separator and all(_is_note_line(line) for line in tail.split("\n")):
        return head, tail.split("\n")
    return joined, []


def classify(sent: Sent, requests: Sequence[RecordedRequest], report: Report) -> None:
    """Record what `sent` got, or which invariant its reply breaks."""
    where = f"{sent.platform} {sent.token}"
    parts = sent.replies
    if not parts:
        report.violate(ONE_REPLY, f"{where}: no reply at all")
        return
    for part in parts:
        if not part.strip() or any(part.endswith(cursor) or cursor + "\n" in part for cursor in CURSORS):
            report.violate(NO_CURSOR, f"{where}: a message still shows {part[-40:]!r}")
            return
        if part.strip() == EMPTY_REPLY:
            report.violate(NO_CURSOR, f"{where}: a message shows {EMPTY_REPLY!r}")
            return
    body, closing = split_notes(parts)
    mine = [r for r in requests if sent.token in asked_text(r)]
    answers = {_answer_of(r) for r in mine if not _is_continuation(r)}
    continued = {_shown_before(r) + _answer_of(r) for r in mine if _is_continuation(r)}
    if not body:
        if len(closing) == 1 and closing[0] in APOLOGIES:
            report.outcomes["apology"] += 1
            return
        report.violate(ONE_REPLY, f"{where}: neither an answer nor an apology: {closing!r}")
        return
    if INTERRUPTED_NOTE in closing:
        if any(full.startswith(body) for full in answers | continued):
            report.outcomes["interrupted"] += 1
            return
    elif body in answers:
        report.outcomes["answered"] += 1
        return
    elif body in continued:
        report.outcomes["continued"] += 1
        return
    if any(body.count(answer) > 1 for answer in answers):
        report.violate(ONE_REPLY, f"{where}: answered more than once")
        return
    expected = next(iter(answers), "<no request reached the model>")
    report.violate(NOTHING_LOST, f"{where}: shown {len(body)} chars {body[:60]!r}…{body[-60:]!r} "
                                 f"!= expected {len(expected)} chars …{expected[-60:]!r}")


def check_isolation(sent: Iterable[Sent], requests: Sequence[RecordedRequest], report: Report) -> None:
    """No request carries a marker of a conversation other than the one it answers."""
    by_token = {s.token: s.conversation for s in sent}
    conversations = set(by_token.values())
    for request in requests:
        asked = asked_text(request)
        owner = next((conv for token, conv in by_token.items() if token in asked), None)
        if owner is None:
            continue
        dumped = json.dumps(request.body, ensure_ascii=False)
        strangers = sorted(c for c in conversations if c != owner and c in dumped)
        if strangers:
            report.violate(ISOLATED, f"a request of {owner} carries {strangers}")


def check_logs(log_text: str, secrets: Iterable[str], report: Report) -> None:
    for secret in secrets:
        leaked = [line for line in log_text.splitlines() if secret in line]
        if leaked:
            report.violate(NO_SECRET, f"{len(leaked)} log lines hold a secret, e.g. {leaked[0][:120]!r}")


def check(
    sent: Sequence[Sent], requests: Sequence[RecordedRequest], *, alive: bool, log_text: str = "",
    secrets: Iterable[str] = (),
) -> Report:
    """Every invariant over one run."""
    report = Report(messages=len(sent))
    for message in sent:
        classify(message, requests, report)
    check_isolation(sent, requests, report)
    check_logs(log_text, secrets, report)
    if not alive:
        report.violate(ALIVE, "the bot was not running at the end")
    return report
