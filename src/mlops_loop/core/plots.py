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
