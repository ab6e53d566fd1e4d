"""Files sent with a Discord message → `core.types.Attachment`s the engine downloads if it wants them.

Discord gives every attachment its name, size, content type and a signed CDN URL that needs no
token (https://discord.com/developers/docs/reference#signed-attachment-cdn-urls). discord.py's
`Attachment.read()` reads a whole response into memory, however large, so downloads go through
`FileDownloader` instead: one pooled aiohttp session (discord.py's proxy settings), reading at most
`max_bytes + 1` bytes of any file, so a size Discord misreported, or a URL that serves more, costs
at most one byte over the bot's limit per file (`core.attachments` then refuses it with a note).
`core.attachments` already refuses by the reported size before downloading anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import aiohttp
import discord

from adapters.downloads import read_bounded
from core.types import Attachment

DOWNLOAD_TIMEOUT_S = 30.0  # the engine gives one file less (`core.attachments.FETCH_TIMEOUT_S`)


class DownloadFailed(Exception):
    """The CDN did not serve the file (expired URL, deleted message, Discord trouble)."""


class FileDownloader:
    """Bounded downloads of attachment URLs, on one session opened on first use."""

    def __init__(self, *, proxy: str | None = None, proxy_auth: aiohttp.BasicAuth | None = None) -> None:
        self._proxy = proxy
        self._proxy_auth = proxy_auth
        self._session: aiohttp.ClientSession | None = None

    async def read(self, url: str, *, max_bytes: int) -> bytes:
        """The file at `url`, cut after `max_bytes + 1` bytes (so the caller sees it was too big)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S))
        async with self._session.get(url, proxy=self._proxy, proxy_auth=self._proxy_auth) as response:
            if response.status != 200:
                raise DownloadFailed(f"HTTP {response.status}")
            return await read_bounded(response, max_bytes)

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def attachments_of(
    files: Sequence[discord.Attachment], *, read: Callable[[str], Awaitable[bytes]]
) -> tuple[Attachment, ...]:
    """The engine's view of a message's files; `read(url)` downloads one when the engine asks."""

    def fetcher(url: str) -> Callable[[], Awaitable[bytes]]:
        return lambda: read(url)

    return tuple(
        Attachment(name=f.filename, mime=f.content_type or "", size=f.size, fetch=fetcher(f.url))
        for f in files
    )
