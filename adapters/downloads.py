"""Bounded file downloads, shared by the adapters that fetch what users attach (Slack, Discord).

aiohttp is both platform libraries' HTTP client, so it is the one dependency here.
"""

from __future__ import annotations

import aiohttp

CHUNK_BYTES = 64 * 1024


async def read_bounded(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """`response`'s body, read at most one byte past `max_bytes`: a size the platform misreported,
    or a URL that serves more, costs one byte over the bot's limit, and the caller (through
    `core.attachments`) sees that it was too big."""
    data = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        data += chunk
        if len(data) > max_bytes:
            break
    return bytes(data[: max_bytes + 1])
