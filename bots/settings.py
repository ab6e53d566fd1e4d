"""Every environment setting, read once into `Settings`. The README's settings table mirrors it.

Each platform's own settings (`SLACK_API_URL`, `DISCORD_API_URL`…) are declared by its spec
(`bots.registry`) and read here with the rest, into `Settings.platform_settings`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bots.registry import PLATFORMS
from core.chat_api import DEFAULT_BASE_URL, ChatTimeouts
from core.journal import JOURNAL_FINALISE_FOR_S, JOURNAL_LEASE_S, JOURNAL_SWEEP_INTERVAL_S
from core.redis_keys import DEFAULT_PREFIX

DEFAULT_BOTS_DIR = Path(__file__).resolve().parent
DEFAULT_HOST = "0.0.0.0"  # reachable from a load balancer / Kubernetes probe
DEFAULT_PORT = 8080
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# redis-py's own URL schemes, plus ours for Sentinel and Cluster (`bots.redis_connect` reads them).
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+sentinel://", "rediss+sentinel://",
                 "redis+cluster://", "rediss+cluster://")
# SIGTERM → exit: replies in flight get this long to finish (the chat API's total deadline, 180 s, plus
# time for their final edits). Every adapter drains within it; the Helm chart's
# terminationGracePeriodSeconds is derived from the same value.
DEFAULT_SHUTDOWN_GRACE_S = 190.0


class SettingsError(ValueError):
    """An everyday setup mistake (a bad variable, a busy port, an unreachable Redis). The message is
    one line that names the setting and the fix; the CLI prints it and exits 2, no traceback."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise SettingsError(f"{name} must be positive, got {raw}")
    return value


def _file(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not Path(raw).is_file():
        raise SettingsError(f"{name}={raw!r}: no such file")
    return raw


@dataclass(frozen=True)
class RedisTLS:
    """TLS files for `rediss://` (and the TLS forms of Sentinel and Cluster), from REDIS_TLS_*; the
    same options may instead be query parameters of REDIS_URL (`?ssl_ca_certs=…`)."""

    ca_file: str | None = None  # a private CA's certificate (else the system's trust store)
    cert_file: str | None = None  # a client certificate, for Redis servers that ask for one
    key_file: str | None = None


@dataclass(frozen=True)
class Settings:
    """The process's configuration (bot definitions aside)."""

    api_key: str | None
    base_url: str
    redis_url: str | None
    redis_prefix: str
    log_format: str  # "console" or "json"
    log_level: str
    host: str
    port: int
    timeouts: ChatTimeouts
    bots_dir: Path
    # PORT or HOST set explicitly: `run` serves HTTP (health, metrics) even for the console bot alone.
    http_requested: bool = False
    shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S
    redis_tls: RedisTLS = field(default_factory=lambda: RedisTLS())
    journal_lease_s: float = JOURNAL_LEASE_S
    journal_sweep_interval_s: float = JOURNAL_SWEEP_INTERVAL_S
    journal_finalise_for_s: float = JOURNAL_FINALISE_FOR_S
    # Every registered platform's settings by variable name (SLACK_API_URL…), defaults filled in.
    platform_settings: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, log_format_default: str = "json") -> Settings:
        port_raw = env.get("PORT", "").strip() or str(DEFAULT_PORT)
        if not port_raw.isdigit() or not 0 <= int(port_raw) < 65536:
            raise SettingsError(f"PORT={port_raw!r} is not a port number")
        log_format = (env.get("LOG_FORMAT", "").strip() or log_format_default).lower()
        if log_format not in ("console", "json"):
            raise SettingsError(f"LOG_FORMAT={log_format!r}: expected 'console' or 'json'")
        log_level = (env.get("LOG_LEVEL", "").strip() or "INFO").upper()
        if log_level not in LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={log_level!r}: expected one of {', '.join(LOG_LEVELS)}")
        defaults = ChatTimeouts()
        redis_url = env.get("REDIS_URL", "").strip() or None
        if redis_url is not None and not redis_url.lower().startswith(REDIS_SCHEMES):
            if "://" in redis_url:
                raise SettingsError(
                    f"REDIS_URL={redact_url(redis_url)!r}: unknown scheme; use one of "
                    f"{', '.join(s.removesuffix('://') for s in REDIS_SCHEMES)} (README \"Managed Redis\")")
            raise SettingsError(
                f"REDIS_URL={redact_url(redis_url)!r} has no scheme: use redis://{redact_url(redis_url)}/0 "
                "(rediss:// for TLS, unix:///path/to/socket), or unset it for the embedded store")
        redis_tls = RedisTLS(
            ca_file=_file(env, "REDIS_TLS_CA_FILE"), cert_file=_file(env, "REDIS_TLS_CERT_FILE"),
            key_file=_file(env, "REDIS_TLS_KEY_FILE"),
        )
        if (redis_tls.cert_file is None) != (redis_tls.key_file is None):
            raise SettingsError("REDIS_TLS_CERT_FILE and REDIS_TLS_KEY_FILE go together (a client "
                                "certificate and its key); set both or neither")
        return cls(
            api_key=env.get("LUNOS_API_KEY", "").strip() or None,
            base_url=env.get("LUNOS_BASE_URL", "").strip() or DEFAULT_BASE_URL,
            redis_url=redis_url,
            redis_prefix=env.get("REDIS_KEY_PREFIX", "").strip() or DEFAULT_PREFIX,
            log_format=log_format,
            log_level=log_level,
            host=env.get("HOST", "").strip() or DEFAULT_HOST,
            port=int(port_raw),
            timeouts=ChatTimeouts(
                connect_s=_float(env, "LUNOS_CONNECT_TIMEOUT_S", defaults.connect_s),
                first_token_s=_float(env, "LUNOS_FIRST_TOKEN_TIMEOUT_S", defaults.first_token_s),
                chunk_gap_s=_float(env, "LUNOS_CHUNK_GAP_TIMEOUT_S", defaults.chunk_gap_s),
                total_s=_float(env, "LUNOS_TOTAL_TIMEOUT_S", defaults.total_s),
            ),
            bots_dir=Path(env.get("LUNOS_BOTS_DIR", "").strip() or DEFAULT_BOTS_DIR),
            http_requested=bool(env.get("PORT", "").strip() or env.get("HOST", "").strip()),
            shutdown_grace_s=_float(env, "SHUTDOWN_GRACE_S", DEFAULT_SHUTDOWN_GRACE_S),
            redis_tls=redis_tls,
            journal_lease_s=_float(env, "JOURNAL_LEASE_S", JOURNAL_LEASE_S),
            journal_sweep_interval_s=_float(env, "JOURNAL_SWEEP_INTERVAL_S", JOURNAL_SWEEP_INTERVAL_S),
            journal_finalise_for_s=_float(env, "JOURNAL_FINALISE_FOR_S", JOURNAL_FINALISE_FOR_S),
            platform_settings=PLATFORMS.read_settings(env),
        )


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***, for logs and messages."""
    if "@" not in url:
        return url
    head, _, host = url.rpartition("@")
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
