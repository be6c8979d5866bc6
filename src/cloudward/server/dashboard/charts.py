"""Chart geometry for the inline SVGs the templates draw: numbers in, coordinates out.

Drawn on the server so the pages need no charting script and look the same without JavaScript.
Everything is in viewBox units; the stylesheet colours shapes by class (`sev-high` ...), so the
charts follow the theme and carry no inline styles (the Content-Security-Policy forbids them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta


def _scale(value: float, largest: float, span: float) -> float:
    return 0.0 if largest <= 0 else round(span * value / largest, 2)


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    css: str
    href: str
    y: float
    width: float


@dataclass(frozen=True)
class BarChart:
    bars: list[Bar]
    height: float
    label_width: float
    span: float
    row: float


def bar_chart(rows: Sequence[tuple[str, int, str, str]], *, label_width: float = 110, span: float = 250,
              row: float = 26) -> BarChart:
    """Horizontal bars: (label, value, css class, link) per row, scaled to the largest."""
    largest = max((value for _, value, _, _ in rows), default=0)
    bars = [Bar(label, value, css, href, i * row, max(_scale(value, largest, span), 1.5 if value else 0))
            for i, (label, value, css, href) in enumerate(rows)]
    return BarChart(bars, max(row * len(rows), row), label_width, span, row)


@dataclass(frozen=True)
class Segment:
    css: str
    x: float
    width: float
    count: int
    label: str


def stack(by_severity: Mapping[str, int], width: float = 100) -> list[Segment]:
    """One horizontal bar split by severity (critical first), as wide as `width` in total."""
    total = sum(by_severity.values())
    out, x = [], 0.0
    for severity, count in by_severity.items():
        if count:
            w = _scale(count, total, width)
            out.append(Segment(f"sev-{severity}", round(x, 2), w, count, severity))
            x += w
    return out


@dataclass(frozen=True)
class Day:
    day: date
    new: int
    fixed: int
    x: float
    up: float
    down: float


@dataclass(frozen=True)
class Trend:
    days: list[Day]
    width: float
    height: float
    mid: float
    column: float
    peak: int
    total_new: int
    total_fixed: int


def trend(new: Mapping[date, int], fixed: Mapping[date, int], last: date, days: int = 30,
          width: float = 440, height: float = 150) -> Trend:
    """New findings above the axis and fixed ones below it, one column per day, oldest first."""
    dates = [last - timedelta(days=days - 1 - i) for i in range(days)]
    peak = max([new.get(d, 0) for d in dates] + [fixed.get(d, 0) for d in dates] + [0])
    mid, column = height / 2, width / days
    out = [Day(d, new.get(d, 0), fixed.get(d, 0), round(i * column, 2),
               _scale(new.get(d, 0), peak, mid - 4), _scale(fixed.get(d, 0), peak, mid - 4))
           for i, d in enumerate(dates)]
    return Trend(out, width, height, mid, round(column, 2), peak, sum(d.new for d in out), sum(d.fixed for d in out))


@dataclass(frozen=True)
class Column:
    label: str
    value: int
    x: float
    width: float
    height: float
    href: str
    css: str


def columns(items: Sequence[tuple[str, int, str, str]], *, width: float = 300, height: float = 60,
            widest: float = 14) -> list[Column]:
    """Vertical bars, oldest on the left, newest against the right edge: (label, value, link,
    css class). A few scans make a few thin bars, not a wall."""
    if not items:
        return []
    largest = max(v for _, v, _, _ in items)
    step = min(width / len(items), widest + 2)
    start = width - step * len(items)
    return [Column(label, value, round(start + i * step + 1, 2), round(step - 2, 2),
                   max(_scale(value, largest, height - 2), 1.0), href, css)
            for i, (label, value, href, css) in enumerate(items)]


CHAR_WIDTH = 7.2  # a generous average advance of the 12.5 px sans-serif stage names


@dataclass(frozen=True)
class Chevron:
    name: str
    slug: str
    count: int
    worst: str | None
    points: str
    text_x: float
    href: str
    text_length: float | None  # squeeze a long name into its arrow (SVG textLength)


def chevrons(stages: Sequence[tuple[str, str, int, str | None]], *, width: float = 1200, height: float = 64,
             notch: float = 16) -> list[Chevron]:
    """The chain as arrow shapes left to right: (name, slug, count, worst severity) per stage."""
    if not stages:
        return []
    step = width / len(stages)
    room = step - 2 * notch - 10
    out = []
    for i, (name, stage_slug, count, worst) in enumerate(stages):
        x0, x1 = i * step, (i + 1) * step - 4
        left = f"{x0:.1f},0 {x0 + notch:.1f},{height / 2:.1f} {x0:.1f},{height:.1f}" if i else \
            f"{x0:.1f},0 {x0:.1f},{height:.1f}"
        points = f"{left} {x1 - notch:.1f},{height:.1f} {x1:.1f},{height / 2:.1f} {x1 - notch:.1f},0"
        squeeze = round(room, 1) if len(name) * CHAR_WIDTH > room else None
        out.append(Chevron(name, stage_slug, count, worst, points, round((x0 + x1) / 2 + (notch / 2 if i else 0), 1),
                           f"/findings?stage={stage_slug}", squeeze))
    return out
