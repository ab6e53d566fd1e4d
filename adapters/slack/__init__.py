"""The Slack adapter: Slack events in (Bolt, Socket Mode or HTTP), replies out through the engine.

`translate` (payloads → core values, pure), `middleware` (events a bot ignores), `pacing` (per-workspace
budgets), `retry` (slack-sdk's 429 retry, telling those budgets), `sink` (`SlackReplySink`), `names`
(display names), `files` (a message's files as core attachments, downloaded with the bot token),
`admins` (who may change a channel's persona), `bot` (`SlackBot`, the runtime: messages, 👍 / 👎
reactions, `/lunos`).
Imports `core` and Slack's libraries, never `bots`.
"""

from __future__ import annotations

from adapters.slack.bot import SlackBot, SlackBotConfig
from adapters.slack.pacing import EditPacing
from adapters.slack.sink import SlackReplySink

__all__ = ["EditPacing", "SlackBot", "SlackBotConfig", "SlackReplySink"]
