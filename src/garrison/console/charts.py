"""Server-rendered SVG charts for the usage page: stacked bars of tokens per day, no script, no inline CSS."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from xml.sax.saxutils import escape

# Colour-blind-safe palette (Okabe-Ito), as SVG presentation attributes (the CSP forbids inline styles).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


@dataclass(frozen=True, slots=True)
class Series:
    """Tokens per day for one key or user."""

    name: str
    values: dict[str, int]


def daily_series(rows: Iterable[tuple[str, str, int]]) -> list[Series]:
    """(name, day, tokens) rows summed per name and day; the largest totals first."""
    totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for name, day, tokens in rows:
        totals[name][day] += tokens
    series = [Series(name, dict(days)) for name, days in totals.items()]
    return sorted(series, key=lambda s: (-sum(s.values.values()), s.name))


def day_range(last_day: str, days: int) -> list[str]:
    end = date.fromisoformat(last_day)
    return [(end - timedelta(days=n)).isoformat() for n in range(days - 1, -1, -1)]


def stacked_bars(title: str, series: list[Series], days: list[str], *, width: int = 640, height: int = 260) -> str:
    """An accessible SVG (role=img, title, desc) of tokens per day, one stacked colour per series."""
    shown = series[: len(PALETTE) - 1]
    if len(series) > len(shown):
        rest: dict[str, int] = defaultdict(int)
        for s in series[len(shown):]:
            for day, value in s.values.items():
                rest[day] += value
        shown = [*shown, Series(f"{len(series) - len(shown)} others", dict(rest))]
    left, right, top, bottom = 56.0, 8.0, 12.0, 36.0
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max([sum(s.values.get(d, 0) for s in shown) for d in days] + [1])
    scale = _nice_ceiling(peak)
    slot = plot_w / max(1, len(days))
    bar = max(2.0, slot * 0.7)
    total = sum(sum(s.values.values()) for s in shown)
    desc = f"{total} tokens over {len(days)} days ({days[0]} to {days[-1]}), by " + ", ".join(
        f"{s.name}: {sum(s.values.values())}" for s in shown
    ) if days else "no data"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="t-{_id(title)} d-{_id(title)}" class="chart">',
        f'<title id="t-{_id(title)}">{escape(title)}</title><desc id="d-{_id(title)}">{escape(desc)}</desc>',
    ]
    for step in range(5):
        tick = scale * step / 4
        y = top + plot_h - plot_h * step / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d4da" />')
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#333">{_short(tick)}</text>'
        )
    for index, day in enumerate(days):
        x = left + index * slot + (slot - bar) / 2
        base = top + plot_h
        for colour, s in zip(PALETTE, shown, strict=False):
            value = s.values.get(day, 0)
            if value <= 0:
                continue
            h = plot_h * value / scale
            base -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{base:.1f}" width="{bar:.1f}" height="{h:.1f}" fill="{colour}">'
                f"<title>{escape(s.name)}, {day}: {value} tokens</title></rect>"
            )
        if len(days) <= 16 or index % max(1, len(days) // 8) == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle" font-size="11" '
                f'fill="#333">{day[5:]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def legend(series: list[Series]) -> list[tuple[str, str, int]]:
    """(colour, name, total) per series, in chart order, for the HTML legend."""
    shown = series[: len(PALETTE) - 1]
    rows = [(c, s.name, sum(s.values.values())) for c, s in zip(PALETTE, shown, strict=False)]
    if len(series) > len(shown):
        others = sum(sum(s.values.values()) for s in series[len(shown):])
        rows.append((PALETTE[len(shown)], f"{len(series) - len(shown)} others", others))
    return rows


def _nice_ceiling(value: float) -> float:
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10.0 * magnitude


def _short(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def _id(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower())
