"""Bot definitions: `bots/*.toml`, one file per bot, loaded into `BotDefinition`s.

Every error names the file, the field and what was expected. `${VAR}` in any string is read from
the environment; an unset variable is an error, except in a platform table's credential fields,
where it marks the bot as lacking credentials (skipped by `run`, reported by `check`).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bots.registry import PLATFORMS
from core.errors import DefinitionError, InvalidDefinition, Problems
from core.limits import TurnLimits
from core.profile import (
    DEFAULT_HISTORY_TTL_S,
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_PROMPT_TOKENS,
    DEFAULT_MAX_TOKENS,
    AttachmentLimits,
    BotProfile,
    HistoryLimits,
    PersonaPolicy,
)

# Besides these, each registered platform's table (`[slack]`…) is a top-level field; which of its
# fields hold secrets (an unset ${VAR} there means "no credentials") is the platform's spec's to say.
PROFILE_FIELDS = frozenset({
    "name", "platform", "app_id", "model", "fallback_models", "system_prompt", "max_tokens",
    "history", "limits", "vision", "attachments", "personas",
})
HISTORY_FIELDS = frozenset({"max_messages", "max_prompt_tokens", "ttl_days"})
ATTACHMENT_FIELDS = ("max_files", "max_file_bytes", "max_total_bytes", "max_text_chars")
PERSONA_FIELDS = frozenset({"admins", "allowed_models"})
# Bots open to many users (every platform but a terminal) have limits even without a [limits]
# table. The terminal bot has one local user and none.
LIMIT_FIELDS = ("user_turns_in_flight", "user_turns_per_minute", "max_input_chars", "daily_tokens")
VAR_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")  # used in URLs (/slack/<name>/events) and keys


@dataclass(frozen=True)
class BotDefinition:
    """One bot: its profile for the engine and its platform table for the adapter."""

    file: Path
    profile: BotProfile
    platform_settings: Mapping[str, Any] = field(default_factory=dict)
    missing_credentials: tuple[str, ...] = ()  # "[slack].bot_token (SLACK_BOT_TOKEN unset)"
    limits: TurnLimits | None = None  # None: no limits (the terminal bot)

    @property
    def name(self) -> str:
        return self.profile.name

    @property
    def platform(self) -> str:
        return self.profile.platform

    def secrets(self) -> list[str]:
        """Credential values, for the log redactor."""
        spec = PLATFORMS.get(self.platform)
        names = spec.credential_fields if spec is not None else ()
        # Stripped too: adapters strip tokens (a Kubernetes secret often ends in a newline), and
        # the redactor must match the value that is actually sent and might be echoed.
        values = [str(v) for k, v in self.platform_settings.items() if k in names and v]
        return [*values, *(v.strip() for v in values if v.strip() != v)]


@dataclass
class LoadReport:
    """What loading a directory found: good definitions and one error per bad file."""

    definitions: list[BotDefinition] = field(default_factory=list)
    errors: list[DefinitionError] = field(default_factory=list)


def _expand(value: Any, path: str, env: Mapping[str, str], unset: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        def replace(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in env or env[var] == "":
                unset.append((path, var))
                return ""
            return env[var]
        return VAR_PATTERN.sub(replace, value)
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", env, unset) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else k, env, unset) for k, v in value.items()}
    return value


def _require_str(file: str, data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None:
        raise DefinitionError(file, key, "is required (a string)")
    if not isinstance(value, str):
        raise DefinitionError(file, key, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DefinitionError(file, key, "must not be empty")
    return value.strip()


def _positive_int(file: str, data: Mapping[str, Any], key: str, default: int, label: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise DefinitionError(file, label, f"expected a positive integer, got {value!r}")
    return value


def top_level_field_names() -> frozenset[str]:
    """The fields a definition may have at its top: the profile's and every platform's table."""
    return PROFILE_FIELDS | frozenset(PLATFORMS.names())


def parse_definition(path: Path, text: str, env: Mapping[str, str]) -> BotDefinition:
    """Parse one definition. Raises `DefinitionError` naming the file and the field — an
    `InvalidDefinition` holding each of them when the file has several mistakes."""
    file = str(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(file, "(file)", f"invalid TOML: {exc}") from exc
    problems = Problems()
    top_level_fields = top_level_field_names()
    for key in sorted(set(raw) - top_level_fields):
        problems.add(DefinitionError(file, key, f"unknown field; expected one of {sorted(top_level_fields)}"))
    unset: list[tuple[str, str]] = []
    data: dict[str, Any] = _expand(raw, "", env, unset)
    for where, var in unset:
        if where == "platform":
            raise DefinitionError(file, "platform", f"${{{var}}} is not set in the environment")

    platform = _require_str(file, data, "platform")  # everything below depends on it
    spec = PLATFORMS.get(platform)
    if spec is None:
        problems.add(DefinitionError(file, "platform",
                                     f"unknown platform {platform!r}; expected one of {PLATFORMS.names()}"))
        problems.raise_if_any()
        raise AssertionError("unreachable: an unknown platform was reported")
    credential_paths = {f"{platform}.{f}" for f in spec.credential_fields}
    missing = tuple(f"[{p.split('.')[0]}].{p.split('.')[1]} ({var} unset)"
                    for p, var in unset if p in credential_paths)
    for where, var in unset:
        if where not in credential_paths:
            problems.add(DefinitionError(file, where, f"${{{var}}} is not set in the environment"))

    name = problems.attempt(lambda: _name(file, data), "")
    app_id = problems.attempt(lambda: _require_str(file, data, "app_id"), "")
    model = problems.attempt(lambda: _require_str(file, data, "model"), "")
    no_fallbacks: tuple[str, ...] = ()
    fallbacks = problems.attempt(lambda: _fallbacks(file, data, model), no_fallbacks)
    system_prompt = data.get("system_prompt", "You are a helpful assistant.")
    if not isinstance(system_prompt, str):
        problems.add(DefinitionError(file, "system_prompt", "expected a string"))
    max_tokens = problems.attempt(
        lambda: _positive_int(file, data, "max_tokens", DEFAULT_MAX_TOKENS, "max_tokens"), DEFAULT_MAX_TOKENS)
    history = problems.attempt(lambda: _history(file, data), HistoryLimits())
    attachments = problems.attempt(lambda: _attachments(file, data), AttachmentLimits())
    personas = problems.attempt(lambda: _personas(file, data), PersonaPolicy())
    no_limits: TurnLimits | None = None
    limits = problems.attempt(lambda: _limits(file, data, platform, limited=not spec.terminal), no_limits)
    platform_settings = data.get(platform, {})
    if not isinstance(platform_settings, dict):
        problems.add(DefinitionError(file, platform, "expected a table"))
        platform_settings = {}
    for key in sorted(PLATFORMS.names()):
        if key != platform and key in data:
            problems.add(DefinitionError(
                file, key, f"a [{key}] table in a {platform!r} bot; remove it or fix platform"))
    problems.raise_if_any()
    absent = tuple(f"[{platform}].{f} (missing)" for f in spec.required_credentials
                   if f not in platform_settings)
    profile = BotProfile(
        name=name, platform=platform, app_id=app_id, model=model, fallback_models=fallbacks,
        system_prompt=str(system_prompt), max_tokens=max_tokens, history=history,
        attachments=attachments, personas=personas,
    )
    return BotDefinition(file=path, profile=profile, platform_settings=platform_settings,
                         missing_credentials=missing + absent, limits=limits)


def _name(file: str, data: Mapping[str, Any]) -> str:
    name = _require_str(file, data, "name")
    if not NAME_PATTERN.match(name):
        raise DefinitionError(file, "name", "expected lowercase letters, digits, '-' or '_' (max 63)")
    return name


def _fallbacks(file: str, data: Mapping[str, Any], model: str) -> tuple[str, ...]:
    fallbacks = data.get("fallback_models", [])
    if not isinstance(fallbacks, list) or not all(isinstance(m, str) and m.strip() for m in fallbacks):
        raise DefinitionError(file, "fallback_models", "expected a list of non-empty model ids")
    chain = [model, *(m.strip() for m in fallbacks)]
    if len(set(chain)) != len(chain):
        raise DefinitionError(
            file, "fallback_models", "expected models different from each other and from model")
    return tuple(m.strip() for m in fallbacks)


def _table(file: str, data: Mapping[str, Any], name: str, fields: Collection[str]
           ) -> tuple[Mapping[str, Any], Problems]:
    """An optional `[name]` table (empty when absent), with one problem per unknown field."""
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        raise DefinitionError(file, name, "expected a table")
    problems = Problems()
    for key in sorted(set(raw) - set(fields)):
        problems.add(DefinitionError(file, f"{name}.{key}",
                                     f"unknown field; expected one of {sorted(fields)}"))
    return raw, problems


def _history(file: str, data: Mapping[str, Any]) -> HistoryLimits:
    history_raw, problems = _table(file, data, "history", HISTORY_FIELDS)
    max_messages = problems.attempt(lambda: _positive_int(
        file, history_raw, "max_messages", DEFAULT_MAX_MESSAGES, "history.max_messages"),
        DEFAULT_MAX_MESSAGES)
    max_prompt_tokens = problems.attempt(lambda: _positive_int(
        file, history_raw, "max_prompt_tokens", DEFAULT_MAX_PROMPT_TOKENS, "history.max_prompt_tokens"),
        DEFAULT_MAX_PROMPT_TOKENS)
    ttl_days = problems.attempt(lambda: _positive_int(
        file, history_raw, "ttl_days", DEFAULT_HISTORY_TTL_S // 86400, "history.ttl_days"), 1)
    problems.raise_if_any()
    return HistoryLimits(max_messages=max_messages, max_prompt_tokens=max_prompt_tokens,
                         ttl_s=ttl_days * 86400)


def _attachments(file: str, data: Mapping[str, Any]) -> AttachmentLimits:
    """`vision` (top level) and the `[attachments]` table over their defaults."""
    raw, problems = _table(file, data, "attachments", ATTACHMENT_FIELDS)
    vision = data.get("vision", False)
    if not isinstance(vision, bool):
        problems.add(DefinitionError(file, "vision", f"expected true or false, got {vision!r}"))
        vision = False
    defaults = AttachmentLimits()
    values: dict[str, int] = {}
    for key in ATTACHMENT_FIELDS:
        values[key] = problems.attempt(
            lambda key=key: _positive_int(file, raw, key, getattr(defaults, key), f"attachments.{key}"),  # type: ignore[misc]
            getattr(defaults, key))
    problems.raise_if_any()
    return AttachmentLimits(vision=vision, **values)


def _personas(file: str, data: Mapping[str, Any]) -> PersonaPolicy:
    """The `[personas]` table: who may set a channel's persona, and which extra models it may use."""
    raw, problems = _table(file, data, "personas", PERSONA_FIELDS)
    lists: dict[str, tuple[str, ...]] = {}
    for key in sorted(PERSONA_FIELDS):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str | int) and str(v).strip() for v in value):
            problems.add(DefinitionError(file, f"personas.{key}", "expected a list of non-empty strings"))
            continue
        lists[key] = tuple(dict.fromkeys(str(v).strip() for v in value))
    problems.raise_if_any()
    return PersonaPolicy(admins=lists["admins"], allowed_models=lists["allowed_models"])


def _limits(file: str, data: Mapping[str, Any], platform: str, *, limited: bool) -> TurnLimits | None:
    """The `[limits]` table over its defaults; each limit is a whole number, 0 switching it off."""
    raw = data.get("limits")
    if not limited:
        if raw is not None:
            raise DefinitionError(file, "limits", f"a {platform!r} bot has one local user and no limits; "
                                  "remove the [limits] table")
        return None
    if raw is None:
        return TurnLimits()
    raw, problems = _table(file, data, "limits", LIMIT_FIELDS)
    values: dict[str, int] = {}
    for key in LIMIT_FIELDS:
        value = raw.get(key, getattr(TurnLimits(), key))
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.add(DefinitionError(file, f"limits.{key}",
                                         f"expected a whole number, 0 for no limit, got {value!r}"))
            continue
        values[key] = value
    problems.raise_if_any()
    return TurnLimits(**values)


def load_definitions(directory: Path, env: Mapping[str, str]) -> LoadReport:
    """Every `*.toml` in `directory`, sorted by file name; duplicates of `name` or `app_id` are
    errors on the later file."""
    report = LoadReport()
    if not directory.is_dir():
        report.errors.append(DefinitionError(str(directory), "(directory)", "not found"))
        return report
    names: dict[str, Path] = {}
    app_ids: dict[str, Path] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            definition = parse_definition(path, path.read_text(encoding="utf-8"), env)
        except InvalidDefinition as exc:
            report.errors.extend(exc.errors)
            continue
        except DefinitionError as exc:
            report.errors.append(exc)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            report.errors.append(DefinitionError(str(path), "(file)", f"unreadable: {exc}"))
            continue
        if definition.name in names:
            report.errors.append(DefinitionError(
                str(path), "name", f"duplicate name {definition.name!r} (also in {names[definition.name]})"))
            continue
        app_id = definition.profile.app_id
        if app_id in app_ids:
            report.errors.append(DefinitionError(
                str(path), "app_id", f"duplicate app_id {app_id!r} (also in {app_ids[app_id]})"))
            continue
        names[definition.name] = path
        app_ids[definition.profile.app_id] = path
        report.definitions.append(definition)
    return report


def select(definitions: Sequence[BotDefinition], only: Sequence[str] | None) -> list[BotDefinition]:
    """The definitions named in `only` (all when empty). Unknown names raise `DefinitionError`."""
    if not only:
        return list(definitions)
    by_name = {d.name: d for d in definitions}
    unknown = [n for n in only if n not in by_name]
    if unknown:
        raise DefinitionError("--only", unknown[0], f"no such bot; known: {sorted(by_name)}")
    return [by_name[n] for n in only]
