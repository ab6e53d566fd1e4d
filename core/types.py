"""Platform-neutral values that cross the seam between adapters and the engine.

Frozen dataclasses only: adapters build them from wire payloads, the engine reads them.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class ConversationKey:
    """Which conversation a message belongs to: the thread where there is one, else the channel.

    Rendered `platform:workspace:channel[:thread]`; histories never cross keys.
    """

    platform: str
    workspace: str
    channel: str
    thread: str | None = None

    def __str__(self) -> str:
        parts = [self.platform, self.workspace, self.channel]
        if self.thread:
            parts.append(self.thread)
        return ":".join(parts)

    def to_json(self) -> str:
        """JSON rather than `str(key)` for storage: ids may one day contain the `:` separator."""
        return json.dumps(
            {"platform": self.platform, "workspace": self.workspace, "channel": self.channel,
             "thread": self.thread},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ConversationKey | None:
        """A stored key, or None for anything malformed (treated as unknown, never a crash)."""
        data = _json_object(raw)
        if data is None:
            return None
        platform, workspace, channel = data.get("platform"), data.get("workspace"), data.get("channel")
        thread = data.get("thread")
        if not all(isinstance(v, str) and v for v in (platform, workspace, channel)):
            return None
        if thread is not None and not isinstance(thread, str):
            return None
        return cls(str(platform), str(workspace), str(channel), thread)


@dataclass(frozen=True)
class Author:
    """Who wrote an incoming message."""

    id: str
    display_name: str


@dataclass(frozen=True)
class ImagePart:
    """An image sent to the model with one user message, as a `data:` URL (never stored)."""

    mime: str  # image/png, image/jpeg, image/gif or image/webp
    data_base64: str

    def as_api(self) -> dict[str, Any]:
        """OpenAI-compatible content part."""
        return {"type": "image_url", "image_url": {"url": f"data:{self.mime};base64,{self.data_base64}"}}


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat-completions request."""

    role: Role
    content: str
    name: str | None = None  # author, for multi-user channels; sent inside the content, not as `name`
    images: tuple[ImagePart, ...] = ()  # a user message's images, on the turn they were sent

    def text(self) -> str:
        """The text the model reads. Author names go into it: OpenAI's `name` field rejects spaces."""
        return f"[{self.name}] {self.content}" if self.name and self.role == "user" else self.content

    def as_api(self) -> dict[str, Any]:
        """The wire form: plain text content, or content parts (text first) when it has images."""
        if not self.images:
            return {"role": self.role, "content": self.text()}
        text = self.text()
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}] if text.strip() else []
        parts += [image.as_api() for image in self.images]
        return {"role": self.role, "content": parts}


class Command(enum.Enum):
    """What the engine does itself instead of asking the model. Every platform has the same ones."""

    RESET = "reset"  # forget this conversation
    HELP = "help"  # say what the bot does


@dataclass(frozen=True)
class Attachment:
    """A file attached to an incoming message, not yet downloaded. The adapter knows how to fetch
    it (with its credentials); `core.attachments` decides whether to, within the bot's limits."""

    name: str
    mime: str  # as the platform reports it ("" when unknown); the file name's extension is a hint too
    size: int | None  # bytes, as the platform reports it; None when unknown
    fetch: Callable[[], Awaitable[bytes]] = field(compare=False, repr=False)
    # For a file the event names only by id: looks up its name, type and size (and how to fetch
    # it) before `core.attachments` decides. Raises when it cannot.
    resolve: Callable[[], Awaitable[Attachment]] | None = field(default=None, compare=False, repr=False)


# The words that name a command, as typed on any platform ("reset", "/reset", "!reset"). Parsed here
# and nowhere else: adapters read `IncomingMessage.command`.
COMMAND_PREFIXES = ("", "/", "!")
_COMMAND_WORDS = {f"{prefix}{command.value}": command for command in Command for prefix in COMMAND_PREFIXES}


def parse_command(text: str) -> Command | None:
    """The command `text` asks for, or None for a message for the model. A message with no words
    (a bare mention, a file without a caption) asks for help rather than sending the model nothing."""
    words = text.strip().lower()
    if not words:
        return Command.HELP
    return _COMMAND_WORDS.get(words)


SeedLoader = Callable[[], Awaitable[Sequence[ChatMessage]]]
AuthorResolver = Callable[[], Awaitable[str]]


@dataclass(frozen=True)
class IncomingMessage:
    """A message addressed to a bot, with the bot mention already stripped from `text`.

    `command` is parsed from `text` when not given (`parse_command`); an adapter with a native
    command (a Discord slash command) passes it instead.
    """

    bot: str
    platform: str
    conversation: ConversationKey
    author: Author
    text: str
    event_id: str
    received_at: float  # wall-clock seconds it was received (`bots.instrumentation` measures from it)
    multi_user: bool = False  # a channel or thread several people talk in (not a DM)
    # Called under the conversation lock when the conversation has no history yet, e.g. to read
    # a Slack thread the bot was mentioned in midway. Bounded by the adapter.
    seed: SeedLoader | None = field(default=None, compare=False)
    # Looks up the author's display name when the adapter does not know it yet; awaited by the
    # engine after the working signal is up, alongside loading history, so it never delays it.
    resolve_author: AuthorResolver | None = field(default=None, compare=False)
    command: Command | None = None
    attachments: tuple[Attachment, ...] = ()  # files and images sent with the message
    # The channel whose persona (`core.personas`) this message is answered with, when it is not the
    # conversation's own channel: a Discord thread is a channel of its own inside its parent.
    persona_channel: ConversationKey | None = None

    def __post_init__(self) -> None:
        # A file sent without a caption is a question about the file, not a request for help.
        if self.command is None and (self.text.strip() or not self.attachments):
            object.__setattr__(self, "command", parse_command(self.text))


@dataclass(frozen=True)
class Usage:
    """Token counts as the API reported them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class ChatRequest:
    """What the engine asks of the chat client for one reply."""

    app_id: str
    model: str
    fallback_models: tuple[str, ...]
    messages: tuple[ChatMessage, ...]
    max_tokens: int

    @property
    def chain(self) -> tuple[str, ...]:
        return (self.model, *self.fallback_models)


@dataclass(frozen=True)
class ChatResult:
    """What one reply turned out to be, across every attempt of the fallback chain."""

    text: str
    model: str  # the model that answered (the response's `model`), last one when continued
    requested_model: str
    fallback_used: bool
    attempts: int
    finish_reason: str | None
    usage: Usage | None  # None: the API sent no usage chunk ("unknown")
    interrupted: bool = False  # text was shown, the stream died and no model could continue it
    # Where the answer starts in `text`: past reasoning that was shown as it streamed, because the
    # model's template opened `<think>` in the prompt and only its `</think>` came (`core.reasoning`).
    answer_start: int = 0

    @property
    def answer(self) -> str:
        """The answer without reasoning shown before it: what history keeps."""
        return self.text[self.answer_start:].lstrip() if self.answer_start else self.text

    @property
    def truncated(self) -> bool:
        """The answer hit `max_tokens`."""
        return self.finish_reason == "length"


@dataclass(frozen=True)
class ReplyInfo:
    """What a sink may mention in a footer once a reply is complete."""

    model: str
    fallback_used: bool
    history_trimmed: bool
    truncated: bool


@dataclass(frozen=True)
class Turn:
    """A user message or an answer, as kept in history."""

    role: Role
    content: str
    author: str | None = None  # display name in multi-user channels
    model: str | None = None  # which model wrote an assistant turn
    at: float = 0.0  # wall-clock seconds
    reply: str | None = None  # an answer's id in the reply journal, so it can be corrected later

    def to_json(self) -> str:
        data: dict[str, Any] = {"role": self.role, "content": self.content, "at": self.at}
        if self.author:
            data["author"] = self.author
        if self.model:
            data["model"] = self.model
        if self.reply:
            data["reply"] = self.reply
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Turn | None:
        """Parse a stored turn; None for anything malformed (skipped rather than crashing a turn)."""
        data = _json_object(raw)
        if data is None:
            return None
        role, content = data.get("role"), data.get("content")
        if role not in ("user", "assistant", "system") or not isinstance(content, str):
            return None
        author = data.get("author")
        model = data.get("model")
        at = data.get("at", 0.0)
        reply = data.get("reply")
        return cls(
            role=cast(Role, role),
            content=content,
            author=author if isinstance(author, str) else None,
            model=model if isinstance(model, str) else None,
            at=float(at) if isinstance(at, int | float) else 0.0,
            reply=reply if isinstance(reply, str) else None,
        )

    def as_message(self) -> ChatMessage:
        return ChatMessage(role=self.role, content=self.content, name=self.author)


def _json_object(raw: str | bytes) -> dict[str, Any] | None:
    """A JSON object from storage, or None when it is not one."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
