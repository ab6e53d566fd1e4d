"""`SlackFiles`: the files of a Slack message as core `Attachment`s, each downloaded only if the
engine asks (`core.attachments` decides, within the bot's limits).

Slack serves a file's bytes at its `url_private_download` (or `url_private`) only to a request
carrying `Authorization: Bearer <token>` of a token with the `files:read` scope; without one it
answers 200 with its HTML sign-in page rather than an error
(https://api.slack.com/types/file#auth; slackapi/bolt-js#2585, where Slack's maintainers point to
that header for exactly this symptom). So a download is refused here when an HTML page comes back
for a file that is not HTML, never handed to the model as if it were the image.

The token goes only to Slack's own hosts (or the configured API host, e.g. a test server): an
external file's `url_private` points at another service (Google Drive, Dropbox…) and must never
see it. A file whose event carries no URL is resolved with `files.info` when Slack says so
(`file_access: "check_file_info"`); a deleted one (`mode: "tombstone"`) or one hidden by the
workspace's plan cannot be fetched. Either way its `fetch` raises `FileUnavailable` and the engine
notes the file as not downloaded: never a crash.

Downloads stream and stop one byte past the bot's per-file limit, so a file whose reported size
is wrong cannot make the bot hold more than that in memory; the engine then refuses it as too big.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import aiohttp
import structlog
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.downloads import read_bounded
from adapters.slack.translate import SlackFile
from core.errors import PlatformError
from core.types import Attachment

log = structlog.get_logger(__name__)

# Hosts a bot token may be sent to: files.slack.com (and GovSlack's files.slack-gov.com). Anything
# else named in a file object (an external file's link) is not Slack's and never gets the token.
SLACK_FILE_HOST_SUFFIXES = ("slack.com", "slack-gov.com")
# Modes whose bytes Slack does not serve: deleted files, and files over a free workspace's limit.
UNAVAILABLE_MODES = frozenset({"tombstone", "hidden_by_limit"})


class FileUnavailable(PlatformError):
    """A file of a Slack message could not be downloaded (the engine notes it; the answer goes on)."""


def slack_host(url: str, *, api_url: str) -> bool:
    """Whether `url` is one of Slack's (or the configured API's) hosts: the only ones given the token."""
    parts, api = urlsplit(url), urlsplit(api_url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    if parts.scheme == api.scheme and parts.netloc.lower() == api.netloc.lower():
        return True  # the configured API host (Slack itself, or a test's fake)
    return parts.scheme == "https" and any(
        host == suffix or host.endswith("." + suffix) for suffix in SLACK_FILE_HOST_SUFFIXES)


class SlackFiles:
    """Builds the `Attachment`s of one bot's messages. `session` is the bot's HTTP session (looked up
    at download time: it exists only while the bot runs)."""

    def __init__(
        self, *, session: Callable[[], aiohttp.ClientSession | None], client: AsyncWebClient, token: str,
        api_url: str, max_bytes: int,
    ) -> None:
        self._session = session
        self._client = client  # files.info, for files whose event carries only an id
        self._token = token
        self._api_url = api_url
        self._max_bytes = max_bytes  # the bot's per-file limit: a download stops one byte past it

    def attachments(self, files: Sequence[SlackFile]) -> tuple[Attachment, ...]:
        """One `Attachment` per file, nothing downloaded yet."""
        return tuple(self._attachment(file) for file in files)

    def _attachment(self, file: SlackFile) -> Attachment:
        name = _text(file.get("name")) or _text(file.get("title")) or "file"
        size = file.get("size")

        async def fetch() -> bytes:
            return await self._fetch(file)

        async def resolve() -> Attachment:
            return self._attachment(await self._info(_text(file.get("id"))))

        # An event may name a file only by id (`file_access: check_file_info`): its name and type,
        # which decide whether it is read at all, come from files.info first.
        by_id = not _download_url(file) and file.get("file_access") == "check_file_info" and bool(
            _text(file.get("id")))
        return Attachment(name=name, mime=_text(file.get("mimetype")),
                          size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                          fetch=fetch, resolve=resolve if by_id else None)

    async def _fetch(self, file: SlackFile) -> bytes:
        mode = _text(file.get("mode"))
        if mode in UNAVAILABLE_MODES:
            raise FileUnavailable(f"slack file is {mode}")
        url = _download_url(file)  # a file named only by id was looked up first (`resolve`)
        if not url:
            raise FileUnavailable("slack file has no download URL")
        return await self._download(url, expected_mime=_text(file.get("mimetype")))

    async def _info(self, file_id: str) -> SlackFile:
        try:
            response = await self._client.files_info(file=file_id)
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise FileUnavailable(f"files.info refused {file_id}") from exc
        info = response.get("file")
        if not isinstance(info, dict) or _text(info.get("mode")) in UNAVAILABLE_MODES:
            raise FileUnavailable(f"files.info has no file {file_id}")
        found: SlackFile = info  # type: ignore[assignment]  # a JSON object from Slack, read as such
        return found

    async def _download(self, url: str, *, expected_mime: str) -> bytes:
        if not slack_host(url, api_url=self._api_url):
            # An external file (or a link Slack did not issue): not ours to fetch with the token.
            raise FileUnavailable("file is not hosted by Slack")
        session = self._session()
        if session is None:
            raise FileUnavailable("the bot is stopped")
        try:
            async with session.get(url, headers={"Authorization": f"Bearer {self._token}"}) as response:
                if response.status != 200:
                    raise FileUnavailable(f"download answered HTTP {response.status}")
                served = response.content_type.lower()
                if served == "text/html" and "html" not in expected_mime.lower():
                    # Slack's sign-in page: the token was refused or lacks files:read.
                    raise FileUnavailable("Slack served a sign-in page (check the files:read scope)")
                data = await read_bounded(response, self._max_bytes)
                if len(data) > self._max_bytes:
                    log.info("slack.file_over_limit", limit=self._max_bytes)
                return data
        except aiohttp.ClientError as exc:
            raise FileUnavailable(f"download failed ({type(exc).__name__})") from exc


def _download_url(file: SlackFile) -> str:
    return _text(file.get("url_private_download")) or _text(file.get("url_private"))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""
