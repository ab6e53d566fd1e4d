"""`ReplyJournal`: every reply in flight, recorded in Redis with a lease, so none is left cut off.

A reply's owner (the `ReplyStream` answering it) opens an entry when the working signal goes up,
records each message it posts and, every `lease_s / 3`, the text its messages show, renewing the
lease. Once the final text is decided it is recorded too; once the platform shows it, the entry is
closed (deleted). If the owner dies (SIGKILL, a crashed replica) or the platform would not take the
final state before the owner gave up, the entry's lease runs out and any replica's
`JournalSweeper` claims it: one claimant wins (an atomic script; the entry's fence goes up, so a
late owner's writes are refused) and makes the platform show the final text if it is known, else
the text shown so far with `INTERRUPTED_NOTE`. Finalising is idempotent (it edits messages to a
text, and records each message it has to post) and is retried with backoff across platform
outages until `finalise_for_s` after the reply began; then the entry is dropped and counted.

All journal keys share one Redis Cluster slot (`{journal}`): the claim script reads the due set and
the entries in one call. Journal traffic is a few writes per reply. Redis failing is not a reason to
fail a reply: writes are skipped while the shared circuit is open (the reply then has no journal,
as before it existed). Platform-neutral: adapters describe where a reply lives (`target`) and
provide the `Finaliser` that can reach it again.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.background import stop_task
from core.errors import PlatformError, ReplyUndeliverable
from core.ports import Finaliser
from core.redis_circuit import RedisCircuit
from core.redis_keys import RedisKeys

log = structlog.get_logger(__name__)

JOURNAL_LEASE_S = 15.0  # an owner renews every third of this; a dead owner's reply is due after it
JOURNAL_SWEEP_INTERVAL_S = 5.0  # how often each process looks for replies due for finalising
JOURNAL_FINALISE_FOR_S = 600.0  # keep trying a reply's final state this long after it began
FINALISE_BACKOFF_S = 2.0  # first wait after a failed finalisation; doubles per attempt
FINALISE_BACKOFF_MAX_S = 60.0
CLAIM_BATCH = 20  # entries one sweep claims at most
ENTRY_TTL_MARGIN_S = 3600.0  # an entry's key outlives its finalising window by this much
INTERRUPTED_NOTE = "_(this answer was interrupted — please ask again)_"

# KEYS[1]: the due set (entry id → when it is due). ARGV: now, lease, owner, bots (JSON list).
# Claims up to CLAIM_BATCH due entries of the given bots: each gets a new lease, owner and fence.
# Returns [id, fence, id, fence, …].
CLAIM_SCRIPT = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[2])
local bots = {}
for _, b in ipairs(cjson.decode(ARGV[4])) do bots[b] = true end
local claimed = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(due) do
  local key = ARGV[6] .. id
  local bot = redis.call('HGET', key, 'bot')
  if not bot then
    redis.call('ZREM', KEYS[1], id)
  elseif bots[bot] then
    local fence = redis.call('HINCRBY', key, 'fence', 1)
    redis.call('HSET', key, 'owner', ARGV[3])
    redis.call('ZADD', KEYS[1], now + lease, id)
    table.insert(claimed, id)
    table.insert(claimed, fence)
  end
end
return claimed
"""

# KEYS[1]: the entry, KEYS[2]: the due set. ARGV: fence, id, due at, then field/value pairs.
# Writes only while the caller's fence is the entry's: 1, else 0 (someone else owns it now).
UPDATE_SCRIPT = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[2])
return 1
"""

# KEYS[1]: the entry, KEYS[2]: the due set. ARGV: fence, id. Deletes it while the fence is the caller's.
CLOSE_SCRIPT = """
if redis.call('HGET', KEYS[1], 'fence') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


@dataclass
class JournalEntry:
    """What the journal knows of one reply."""

    id: str
    bot: str
    target: dict[str, str]  # where the reply lives, in the adapter's words
    refs: list[str | None] = field(default_factory=list)  # message index → platform ref (None: not posted)
    shown: list[str] = field(default_factory=list)  # message index → text it shows now
    final: list[str] | None = None  # message index → final text, once decided
    indicator: str = ""  # the streaming indicator the platform shows while text grows
    began_at: float = 0.0  # wall-clock seconds
    attempts: int = 0  # finalisations tried by sweepers
    fence: int = 0
    conversation: str = ""  # the conversation's key (JSON), to correct its history if abandoned

    def fields(self) -> dict[str, str]:
        data = {
            "bot": self.bot, "target": json.dumps(self.target), "refs": json.dumps(self.refs),
            "shown": json.dumps(self.shown), "indicator": self.indicator, "began_at": repr(self.began_at),
            "attempts": str(self.attempts), "conversation": self.conversation,
        }
        if self.final is not None:
            data["final"] = json.dumps(self.final)
        return data

    @classmethod
    def from_fields(cls, entry_id: str, raw: Mapping[bytes | str, bytes | str]) -> JournalEntry:
        data = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}
        final = data.get("final")
        return cls(
            id=entry_id, bot=data["bot"], target=json.loads(data.get("target", "{}")),
            refs=json.loads(data.get("refs", "[]")), shown=json.loads(data.get("shown", "[]")),
            final=None if final is None else json.loads(final), indicator=data.get("indicator", ""),
            began_at=float(data.get("began_at", "0")), attempts=int(data.get("attempts", "0")),
            fence=int(data.get("fence", "0")), conversation=data.get("conversation", ""),
        )

    def texts_to_show(self) -> list[str]:
        """The final state: the final text when known, else what was shown, ended with the note."""
        if self.final is not None:
            return list(self.final)
        return self.shown_with_note()

    def shown_with_note(self) -> list[str]:
        """What the messages showed (without the streaming indicator), the last ended with the note."""
        shown = [t.removesuffix(self.indicator) if self.indicator else t for t in self.shown]
        if not shown:
            return [INTERRUPTED_NOTE]
        shown[-1] = f"{shown[-1].rstrip()}\n\n{INTERRUPTED_NOTE}"
        return shown


class ReplyJournal:
    """The journal in Redis. One per process, shared by every bot and reply."""

    def __init__(
        self, redis: Redis, keys: RedisKeys, circuit: RedisCircuit | None = None, *,
        lease_s: float = JOURNAL_LEASE_S, finalise_for_s: float = JOURNAL_FINALISE_FOR_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._circuit = circuit or RedisCircuit()
        self.lease_s = lease_s
        self.finalise_for_s = finalise_for_s
        self._clock = clock
        self.owner = uuid.uuid4().hex[:12]  # this process, in the entries it owns
        self._claim = redis.register_script(CLAIM_SCRIPT)
        self._update = redis.register_script(UPDATE_SCRIPT)
        self._close = redis.register_script(CLOSE_SCRIPT)

    def now(self) -> float:
        return self._clock()

    def _entry_key(self, entry_id: str) -> str:
        return self._keys.journal_entry(entry_id)

    async def open(self, entry: JournalEntry) -> bool:
        """Record a new reply, owned by this process (fence 1). False when Redis is down."""
        entry.fence = 1
        entry.began_at = entry.began_at or self._clock()
        fields = {**entry.fields(), "fence": "1", "owner": self.owner}
        return await self._run("open", self._write_new(entry.id, fields))

    async def _write_new(self, entry_id: str, fields: dict[str, str]) -> None:
        key = self._entry_key(entry_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=dict(fields.items()))
            pipe.expire(key, int(self.finalise_for_s + ENTRY_TTL_MARGIN_S))
            pipe.zadd(self._keys.journal_due(), {entry_id: self._clock() + self.lease_s})
            await pipe.execute()

    async def record(self, entry: JournalEntry, *, due_in_s: float | None = None) -> bool | None:
        """Write the entry's refs, shown text and final text, renewing its lease (or making it due
        in `due_in_s`). True when written, False when another process owns it now, None when Redis
        is down."""
        due = self._clock() + (self.lease_s if due_in_s is None else due_in_s)
        pairs = [item for kv in entry.fields().items() for item in kv]

        async def write() -> int:
            return int(await self._update(keys=[self._entry_key(entry.id), self._keys.journal_due()],
                                          args=[str(entry.fence), entry.id, repr(due), *pairs]))

        result: list[int] = []

        async def run() -> None:
            result.append(await write())

        if not await self._run("record", run()):
            return None
        return bool(result[0])

    async def close(self, entry: JournalEntry) -> None:
        """The platform shows the final state: forget the reply."""
        async def run() -> None:
            await self._close(keys=[self._entry_key(entry.id), self._keys.journal_due()],
                              args=[str(entry.fence), entry.id])

        await self._run("close", run())

    async def claim_due(self, bots: Sequence[str]) -> list[JournalEntry]:
        """Take over up to `CLAIM_BATCH` replies of `bots` whose lease ran out."""
        if not bots or self._circuit.is_open:
            return []
        try:
            flat = await self._claim(
                keys=[self._keys.journal_due()],
                args=[repr(self._clock()), repr(self.lease_s), self.owner, json.dumps(list(bots)),
                      str(CLAIM_BATCH), self._keys.journal_entry("")],
            )
            entries: list[JournalEntry] = []
            for i in range(0, len(flat), 2):
                entry_id = flat[i].decode() if isinstance(flat[i], bytes) else str(flat[i])
                raw = await self._redis.hgetall(self._entry_key(entry_id))
                if raw:
                    entries.append(JournalEntry.from_fields(entry_id, raw))
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("journal.degraded", op="claim", error=type(exc).__name__)
            return []
        self._circuit.record_success()
        return entries

    async def _run(self, op: str, call: object) -> bool:
        assert asyncio.iscoroutine(call)
        if self._circuit.is_open:
            call.close()
            return False
        try:
            await call
        except (RedisError, OSError) as exc:
            self._circuit.record_failure()
            log.warning("journal.degraded", op=op, error=type(exc).__name__)
            return False
        self._circuit.record_success()
        return True


class JournalSweeper:
    """Finalises the replies of this process's bots whose owner is gone or gave up."""

    def __init__(
        self, journal: ReplyJournal, finalisers: Mapping[str, Finaliser], *,
        interval_s: float = JOURNAL_SWEEP_INTERVAL_S, backoff_s: float = FINALISE_BACKOFF_S,
        on_outcome: Callable[[str, str], None] | None = None,
        on_abandoned: Callable[[JournalEntry], Awaitable[None]] | None = None,
    ) -> None:
        self._on_abandoned = on_abandoned  # e.g. correct history to what the user saw
        self._journal = journal
        self._finalisers = dict(finalisers)
        self._interval_s = interval_s
        self._backoff_s = backoff_s
        self._on_outcome = on_outcome  # (bot, "finalised" | "abandoned" | "retrying"), for metrics
        self._task: asyncio.Task[None] | None = None

    def add(self, bot: str, finaliser: Finaliser) -> None:
        """Sweep `bot`'s replies too (a bot that started after the sweeper did)."""
        self._finalisers[bot] = finaliser

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="journal-sweeper")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def sweep(self) -> int:
        """One pass: claim due replies and finalise them; returns how many were claimed."""
        entries = await self._journal.claim_due(list(self._finalisers))
        await asyncio.gather(*(self._finalise(e) for e in entries))
        return len(entries)

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # a bug here must not stop the sweeping
                log.exception("journal.sweep_failed")
            await asyncio.sleep(self._interval_s)

    async def _finalise(self, entry: JournalEntry) -> None:
        finaliser = self._finalisers[entry.bot]
        texts = entry.texts_to_show()
        log.info("journal.finalising", bot=entry.bot, reply=entry.id, final_known=entry.final is not None,
                 attempt=entry.attempts + 1)
        try:
            for i, text in enumerate(texts):
                ref = entry.refs[i] if i < len(entry.refs) else None
                if ref is None:
                    new_ref = await finaliser.post(entry.target, text)
                    while len(entry.refs) <= i:
                        entry.refs.append(None)
                    entry.refs[i] = new_ref
                    await self._journal.record(entry)  # a retry edits it rather than posting again
                else:
                    await finaliser.edit(entry.target, ref, text)
            await finaliser.done(entry.target)
        except ReplyUndeliverable as exc:
            log.warning("journal.undeliverable", bot=entry.bot, reply=entry.id, error=str(exc))
            await self._journal.close(entry)
            self._outcome(entry.bot, "abandoned")
            return
        except (PlatformError, OSError, TimeoutError) as exc:
            await self._retry_later(entry, exc)
            return
        await self._journal.close(entry)
        log.info("journal.finalised", bot=entry.bot, reply=entry.id)
        self._outcome(entry.bot, "finalised")

    async def _retry_later(self, entry: JournalEntry, exc: BaseException) -> None:
        entry.attempts += 1
        wait = min(self._backoff_s * 2 ** (entry.attempts - 1), FINALISE_BACKOFF_MAX_S)
        deadline = entry.began_at + self._journal.finalise_for_s
        if self._journal.now() + wait > deadline:
            log.error("journal.abandoned", bot=entry.bot, reply=entry.id, attempts=entry.attempts,
                      error=str(exc), note="the platform did not take the final state in time")
            await self._journal.close(entry)
            self._outcome(entry.bot, "abandoned")
            if self._on_abandoned is not None:
                await self._on_abandoned(entry)
            return
        log.warning("journal.retrying", bot=entry.bot, reply=entry.id, attempt=entry.attempts,
                    error=str(exc), retry_in_s=wait)
        await self._journal.record(entry, due_in_s=wait)
        self._outcome(entry.bot, "retrying")

    def _outcome(self, bot: str, outcome: str) -> None:
        if self._on_outcome is not None:
            self._on_outcome(bot, outcome)
