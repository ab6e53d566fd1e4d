"""Result rows, named targets and the printed table shared by every benchmark module."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal["PASS", "MISS", "info"]


@dataclass(frozen=True)
class Target:
    """A speed (or correctness) target: the constant that holds it, how it reads, and why."""

    constant: str
    text: str
    reason: str


@dataclass
class Row:
    """One line of the table. `p50`/`p95`/`max` are preformatted with their unit."""

    name: str
    n: int
    p50: str = "-"
    p95: str = "-"
    max: str = "-"
    result: str = "-"
    target: Target | None = None
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        if self.target is None or self.met is None:
            return "info"
        return "PASS" if self.met else "MISS"


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (`pct` in 0..100) of a non-empty sequence."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * pct / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> str:
    """Seconds as milliseconds, with a precision that suits the size."""
    value = seconds * 1000.0
    if math.isnan(value):
        return "-"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 1000:
        return f"{value:.1f} ms"
    return f"{value:,.0f} ms"


def rate(count: float, unit: str) -> str:
    """A rate such as `123,456 deltas/s`."""
    return f"{count:,.0f} {unit}/s"


def latency_row(name: str, samples: Sequence[float], *, n: int | None = None) -> Row:
    """A row whose p50/p95/max are the percentiles of `samples` (seconds); `n` defaults to their count."""
    row = Row(name=name, n=len(samples) if n is None else n)
    if samples:
        row.p50, row.p95, row.max = ms(percentile(samples, 50)), ms(percentile(samples, 95)), ms(max(samples))
    return row


HEADERS = ("benchmark", "n", "p50", "p95", "max", "result", "target", "verdict")


def render_table(rows: Sequence[Row]) -> str:
    """The result table, then each row's notes and the reason of every target."""
    cells = [
        (r.name, str(r.n), r.p50, r.p95, r.max, r.result, r.target.text if r.target else "-", r.verdict)
        for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    numeric = {1, 2, 3, 4}

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if i in numeric else v.ljust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    out = [line(HEADERS), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    noted = [r for r in rows if r.notes]
    if noted:
        out += ["", "Notes:"]
        for r in noted:
            out.append(f"  {r.name}")
            out.extend(f"    - {note}" for note in r.notes)
    targets = {r.target.constant: r.target for r in rows if r.target}
    if targets:
        out += ["", "Targets (not asserted; a MISS is reported, the run still succeeds):"]
        out.extend(f"  {t.constant}: {t.text} — {t.reason}" for t in targets.values())
    return "\n".join(out)


@dataclass(frozen=True)
class Measure:
    """One line of a process-level table: what was measured, its value, the target, and whether
    the value meets it (None: no target, reported for information)."""

    name: str
    value: str
    target: str = "-"
    met: bool | None = None


def render_measures(title: str, measures: Sequence[Measure], notes: Sequence[str] = ()) -> str:
    """A table with columns value / target / met, then its notes."""
    headers = ("measure", "value", "target", "met")
    cells = [(m.name, m.value, m.target, "-" if m.met is None else ("yes" if m.met else "NO"))
             for m in measures]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [title, "", line(headers), line(["-" * w for w in widths])]
    out.extend(line(c) for c in cells)
    if notes:
        out += ["", *(f"- {n}" for n in notes)]
    return "\n".join(out)


def render_measures_markdown(title: str, measures: Sequence[Measure], notes: Sequence[str] = ()) -> str:
    """The same table in Markdown, for docs/benchmarks.md."""
    out = [f"### {title}", "", "| measure | value | target | met |", "| --- | --- | --- | --- |"]
    for m in measures:
        met = "–" if m.met is None else ("yes" if m.met else "**no**")
        out.append(f"| {m.name} | {m.value} | {m.target} | {met} |")
    if notes:
        out += ["", *(f"- {n}" for n in notes)]
    return "\n".join(out)
