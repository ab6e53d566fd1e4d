"""What the model gets of the files sent with a message: images as content parts, text inlined.

`read_attachments` downloads what a bot's `AttachmentLimits` allow (through each `Attachment`'s
`fetch`, which the adapter built with its credentials) and says, in one short note each, what it
left out and why: never a silent drop, never a crash. History keeps the inlined text and, for an
image, a reference (`[image: name.png]`), never its bytes: the model sees an image on the turn it
was sent.

Platform-neutral: it must not import adapters, bots or any platform library.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

import structlog

from core.profile import AttachmentLimits
from core.types import Attachment, ImagePart

log = structlog.get_logger(__name__)

# The image types OpenAI-compatible vision models accept as `image_url` data URLs.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_EXTENSIONS = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                    ".webp": "image/webp"}
# Read as text whatever their reported type (platforms often say application/octet-stream for code).
TEXT_EXTENSIONS = frozenset({
    ".txt", ".md", ".markdown", ".rst", ".csv", ".tsv", ".json", ".jsonl", ".yaml", ".yml", ".toml",
    ".ini", ".cfg", ".conf", ".log", ".xml", ".html", ".htm", ".css", ".scss", ".sql", ".sh", ".bash",
    ".zsh", ".ps1", ".bat", ".py", ".pyi", ".ipynb", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".go",
    ".rs", ".java", ".kt", ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php",
    ".swift", ".m", ".r", ".lua", ".pl", ".ex", ".exs", ".erl", ".hs", ".clj", ".dart", ".vue",
    ".svelte", ".tf", ".gradle", ".proto", ".graphql", ".env.example", ".diff", ".patch",
})
TEXT_TYPES = frozenset({
    "application/json", "application/xml", "application/x-yaml", "application/yaml", "application/toml",
    "application/javascript", "application/x-javascript", "application/typescript", "application/x-sh",
    "application/sql", "application/x-python", "application/x-ndjson",
})
FETCH_TIMEOUT_S = 15.0  # one file; a slow download costs that file, not the answer


@dataclass
class ReadAttachments:
    """What one message's files became."""

    images: list[ImagePart] = field(default_factory=list)
    text: str = ""  # inlined text files (and image references), appended to the user's message
    history_text: str = ""  # what history keeps of them: the text files, references for images
    notes: list[str] = field(default_factory=list)  # one line per file left out, shown with the reply

    @property
    def note(self) -> str | None:
        return "\n".join(self.notes) or None


def kind_of(attachment: Attachment) -> str:
    """"image", "text" or "other", from the reported type and the file name."""
    mime = attachment.mime.split(";")[0].strip().lower()
    suffix = PurePosixPath(attachment.name.lower()).suffix
    if mime.startswith("image/") or (not mime and suffix in IMAGE_EXTENSIONS):
        return "image"
    if mime.startswith("text/") or mime in TEXT_TYPES or suffix in TEXT_EXTENSIONS:
        return "text"
    return "other"


def _image_type(attachment: Attachment) -> str | None:
    mime = attachment.mime.split(";")[0].strip().lower()
    if mime in IMAGE_TYPES:
        return mime
    if not mime or mime == "application/octet-stream":
        return IMAGE_EXTENSIONS.get(PurePosixPath(attachment.name.lower()).suffix)
    return None


def _safe_name(name: str) -> str:
    """A file name as shown in notes and history: one line, no backticks, bounded."""
    cleaned = " ".join(name.replace("`", "'").split()) or "file"
    return cleaned if len(cleaned) <= 80 else cleaned[:79] + "…"


async def read_attachments(
    attachments: Sequence[Attachment], limits: AttachmentLimits
) -> ReadAttachments:
    """Download and shape `attachments` within `limits`. Never raises for a file's trouble."""
    out = ReadAttachments()
    text_parts: list[str] = []
    history_parts: list[str] = []
    total = 0
    for position, attachment in enumerate(attachments):
        if position >= limits.max_files:
            name = _safe_name(attachment.name)
            out.notes.append(f"_(skipped `{name}`: I read at most {limits.max_files} files per message)_")
            continue
        if attachment.resolve is not None:
            try:
                async with asyncio.timeout(FETCH_TIMEOUT_S):
                    attachment = await attachment.resolve()
            except Exception as exc:  # a failed lookup costs this file only
                log.warning("attachment.resolve_failed", file=_safe_name(attachment.name),
                            error=type(exc).__name__)
                out.notes.append(f"_(skipped `{_safe_name(attachment.name)}`: I couldn't download it)_")
                continue
        name = _safe_name(attachment.name)
        kind = kind_of(attachment)
        if kind == "other":
            shown_type = attachment.mime.split(";")[0].strip() or "unknown type"
            out.notes.append(f"_(skipped `{name}`: I can't read {shown_type} files)_")
            continue
        mime = _image_type(attachment) if kind == "image" else None
        if kind == "image" and not limits.vision:
            out.notes.append(f"_(skipped `{name}`: this bot doesn't look at images)_")
            history_parts.append(f"[image not read: {name}]")
            continue
        if kind == "image" and mime is None:
            out.notes.append(f"_(skipped `{name}`: images must be PNG, JPEG, GIF or WebP)_")
            continue
        too_big = _too_big(attachment.size, total, limits)
        if too_big:
            out.notes.append(f"_(skipped `{name}`: {too_big})_")
            continue
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S):
                data = await attachment.fetch()
        except Exception as exc:  # any download trouble costs this file only
            log.warning("attachment.fetch_failed", file=name, error=type(exc).__name__)
            out.notes.append(f"_(skipped `{name}`: I couldn't download it)_")
            continue
        too_big = _too_big(len(data), total, limits)
        if too_big:
            out.notes.append(f"_(skipped `{name}`: {too_big})_")
            continue
        total += len(data)
        if kind == "image":
            assert mime is not None
            out.images.append(ImagePart(mime=mime, data_base64=base64.b64encode(data).decode("ascii")))
            history_parts.append(f"[image: {name}]")
            continue
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            out.notes.append(f"_(skipped `{name}`: it isn't UTF-8 text)_")
            continue
        if len(content) > limits.max_text_chars:
            content = content[: limits.max_text_chars]
            out.notes.append(f"_(read only the first {limits.max_text_chars:,} characters of `{name}`)_")
        block = f"[file: {name}]\n```\n{content.replace('```', '` ` `')}\n```"
        text_parts.append(block)
        history_parts.append(block)
    out.text = "\n\n".join(text_parts)
    out.history_text = "\n\n".join(history_parts)
    return out


def _too_big(size: int | None, total: int, limits: AttachmentLimits) -> str | None:
    if size is None:
        return None
    if size > limits.max_file_bytes:
        return f"it is {_mb(size)}, over this bot's {_mb(limits.max_file_bytes)} limit per file"
    if total + size > limits.max_total_bytes:
        return f"the files of one message may total {_mb(limits.max_total_bytes)}"
    return None


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB" if size >= 100_000 else f"{max(1, size // 1000)} KB"
