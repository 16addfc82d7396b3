"""Small self-contained SVG plots for reports (no plotting library, no external assets)."""

from __future__ import annotations

import html


def paired_bars_svg(
    rows: list[tuple[str, float | None, float | None]],
    first: str = "challenger",
    second: str = "champion",
    title: str = "",
) -> str:
    """Horizontal bars, two per row (e.g. challenger vs champion for each metric).

    Each row is scaled to its own larger value, so metrics of different ranges share one plot;
    the values are printed beside the bars.
    """
    bar, gap, label_w, width = 14, 10, 110, 320
    height = 40 + len(rows) * (2 * bar + gap)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 140}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        f'<text x="0" y="14" font-weight="bold">{html.escape(title)}</text>',
        f'<rect x="{label_w}" y="22" width="10" height="10" fill="#e67e22"/>'
        f'<text x="{label_w + 14}" y="31">{html.escape(first)}</text>'
        f'<rect x="{label_w + 110}" y="22" width="10" height="10" fill="#2c7fb8"/>'
        f'<text x="{label_w + 124}" y="31">{html.escape(second)}</text>',
    ]
    y = 40
    for label, a, b in rows:
        top = max(abs(a or 0), abs(b or 0)) or 1.0
        parts.append(f'<text x="0" y="{y + bar + 4}">{html.escape(label)}</text>')
        for value, color, dy in ((a, "#e67e22", 0), (b, "#2c7fb8", bar)):
            w = 0 if value is None else int(width * abs(value) / top)
            text = "n/a" if value is None else f"{value:.4f}"
            parts.append(
                f'<rect x="{label_w}" y="{y + dy}" width="{w}" height="{bar - 2}" '
                f'fill="{color}"/><text x="{label_w + w + 4}" y="{y + dy + bar - 4}">{text}</text>'
            )
        y += 2 * bar + gap
    parts.append("</svg>")
    return "".join(parts)


def timeline_svg(
    labels: list[str],
    series: list[tuple[str, list[float | None], str]],
    marks: list[tuple[int, str, str]] | None = None,
    title: str = "",
    y_range: tuple[float, float] = (0.0, 1.0),
    right: set[str] | None = None,
    right_range: tuple[float, float] = (0.0, 1.0),
) -> str:
    """Lines over batches on a 0..1 axis (or `y_range`), with labelled markers (quarantine,
    promotion ...). Series named in `right` use a second axis on the right (`right_range`),
    e.g. a drift share beside an error in the target's units.

    Args:
        labels: the x positions' names (batch keys), in order.
        series: (name, values (None: a gap), colour).
        marks: (x index, text, colour) drawn as a vertical line with the text above it.
    """
    right = right or set()
    left, top, width, height = 56, 44, max(120 * len(labels), 360), 220
    gap = 44 if right else 0  # room for the right axis' labels
    lo, hi = y_range
    n = max(len(labels) - 1, 1)

    def x(i: int) -> float:
        return left + width * i / n

    def scaled(v: float, bounds: tuple[float, float]) -> float:
        a, b = bounds
        return top + height * (1 - (min(max(v, a), b) - a) / (b - a))

    def y(v: float) -> float:
        return scaled(v, (lo, hi))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + gap + 170}" '
        f'height="{top + height + 56}" font-family="sans-serif" font-size="12">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{left}" y="16" font-weight="bold" font-size="14">{html.escape(title)}</text>',
    ]
    for k in range(6):
        v = lo + (hi - lo) * k / 5
        parts.append(
            f'<line x1="{left}" x2="{left + width}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#ddd"/><text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">'
            f"{_tick(v, hi - lo)}</text>"
        )
        if right:
            r = right_range[0] + (right_range[1] - right_range[0]) * k / 5
            parts.append(
                f'<text x="{left + width + 6}" y="{y(v) + 4:.1f}" fill="#e67e22">'
                f"{_tick(r, right_range[1] - right_range[0])}</text>"
            )
    for i, label in enumerate(labels):
        parts.append(
            f'<text x="{x(i):.1f}" y="{top + height + 18}" text-anchor="middle">'
            f"{html.escape(label)}</text>"
        )
    for i, text, colour in marks or []:
        parts.append(
            f'<line x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{top}" y2="{top + height}" '
            f'stroke="{colour}" stroke-dasharray="4 3"/>'
            f'<text x="{x(i) + 3:.1f}" y="{top - 6}" fill="{colour}">{html.escape(text)}</text>'
        )
    for s, (name, values, colour) in enumerate(series):
        bounds = right_range if name in right else (lo, hi)
        points = [(x(i), scaled(v, bounds)) for i, v in enumerate(values) if v is not None]
        segments: list[list[tuple[float, float]]] = [[]]
        for i, value in enumerate(values):
            if value is None:
                segments.append([])
            else:
                segments[-1].append((x(i), scaled(value, bounds)))
        for seg in segments:
            if len(seg) > 1:
                path = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
                parts.append(
                    f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>'
                )
        parts += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3.5" fill="{colour}"/>' for a, b in points]
        ly = top + 14 + 18 * s
        shown = f"{name} (right axis)" if name in right else name
        lx = left + width + gap + 16
        parts.append(
            f'<rect x="{lx}" y="{ly - 9}" width="12" height="4" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{ly - 3}">{html.escape(shown)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _tick(v: float, span: float) -> str:
    """An axis label with as many decimals as the axis' span needs."""
    if span >= 50:
        return f"{v:.0f}"
    return f"{v:.1f}" if span >= 0.5 else f"{v:.2f}"
