"""Small self-contained SVG charts (no plotting library, no network at view time)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
W, H, L, R, T, B = 760, 320, 56, 290, 30, 48  # size and margins (R: legend with full model names)


def _frame(title: str, x_label: str, y_label: str, body: list[str], legend: Sequence[str]) -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f"{escape(title)}</text>",
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#333"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#333"/>',
        f'<text x="{(L + W - R) / 2}" y="{H - 8}" text-anchor="middle">{escape(x_label)}</text>',
        f'<text x="14" y="{(T + H - B) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(T + H - B) / 2})">{escape(y_label)}</text>',
    ]
    for i in range(6):  # y grid 0..1
        y = H - B - i / 5 * (H - B - T)
        parts.append(f'<line x1="{L}" y1="{y}" x2="{W - R}" y2="{y}" stroke="#ddd"/>')
        parts.append(f'<text x="{L - 6}" y="{y + 4}" text-anchor="end">{i / 5:.1f}</text>')
    parts += body
    for i, name in enumerate(legend):
        y = T + 14 * i
        parts.append(
            f'<rect x="{W - R + 45}" y="{y}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
        )
        parts.append(f'<text x="{W - R + 59}" y="{y + 9}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _y(v: float) -> float:
    return H - B - max(0.0, min(1.0, v)) * (H - B - T)


def _error_bar(x: float, lo: float, hi: float) -> str:
    """A vertical 95% interval with caps at ``x`` (rates in 0..1)."""
    y0, y1 = _y(lo), _y(hi)
    return (
        f'<path d="M{x:.1f},{y0:.1f}V{y1:.1f}M{x - 3:.1f},{y0:.1f}H{x + 3:.1f}'
        f'M{x - 3:.1f},{y1:.1f}H{x + 3:.1f}" stroke="#222" stroke-width="1" fill="none" class="ci"/>'
    )


def grouped_bars(
    title: str,
    groups: Sequence[str],
    series: dict[str, dict[str, float]],
    y_label: str,
    errors: dict[str, dict[str, tuple[float, float]]] | None = None,
) -> str:
    """One group of bars per entry of ``groups`` (e.g. condition), one bar per series (model);
    ``errors[series][group] = (lo, hi)`` draws a 95% interval on that bar."""
    names = list(series)
    gw = (W - R - L) / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(names))
    body = []
    for g, group in enumerate(groups):
        x0 = L + g * gw + gw * 0.1
        body.append(
            f'<text x="{L + g * gw + gw / 2}" y="{H - B + 14}" text-anchor="middle">{escape(group)}</text>'
        )
        for s, name in enumerate(names):
            v = series[name].get(group)
            if v is None:
                continue
            x, y = x0 + s * bw, _y(v)
            color = PALETTE[s % len(PALETTE)]
            ci = (errors or {}).get(name, {}).get(group)
            tip = f"{escape(name)} {escape(group)}: {v:.3f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" height="{H - B - y:.1f}" fill="{color}">'
                f"<title>{tip}</title></rect>"
            )
            if ci and all(c == c for c in ci):  # NaN bounds (n = 0) draw nothing
                body.append(_error_bar(x + (bw - 1) / 2, *ci))
    return _frame(title, "", y_label, body, names)


def heatmap(title: str, rows: Sequence[str], cols: Sequence[str], values: dict[str, dict[str, float]]) -> str:
    """Rates in 0..1 as a grid of cells (white -> dark red), the value written in each cell."""
    cw, ch, left, top = 78, 18, 250, 40
    width, height = left + cw * len(cols) + 20, top + ch * len(rows) + 20
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<text x="{width / 2}" y="14" text-anchor="middle" font-size="12" font-weight="bold">'
        f"{escape(title)}</text>",
    ]
    for j, col in enumerate(cols):
        parts.append(
            f'<text x="{left + cw * j + cw / 2}" y="{top - 6}" text-anchor="middle">{escape(col)}</text>'
        )
    for i, row in enumerate(rows):
        y = top + ch * i
        parts.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end">{escape(row[:44])}</text>')
        for j, col in enumerate(cols):
            v = values.get(row, {}).get(col)
            if v is None or v != v:
                fill, label = "#eee", "-"
            else:
                t = max(0.0, min(1.0, v))
                fill = f"rgb(255,{int(255 - 180 * t)},{int(255 - 200 * t)})"
                label = f"{v:.2f}"
            parts.append(
                f'<rect x="{left + cw * j}" y="{y}" width="{cw - 1}" height="{ch - 1}" '
                f'fill="{fill}" class="cell">'
                f"<title>{escape(row)} {escape(col)}: {label}</title></rect>"
            )
            parts.append(
                f'<text x="{left + cw * j + cw / 2}" y="{y + 13}" text-anchor="middle">{label}</text>'
            )
    parts.append("</svg>")
    return "\n".join(parts)


def scatter(
    title: str,
    series: dict[str, list[tuple[float, float, str]]],
    x_label: str,
    y_label: str,
    x_max: float | None = None,
    lines: bool = False,
) -> str:
    """Points (x, y, label) per series; x scaled to [0, x_max] (default: 0..1)."""
    xs = [x for pts in series.values() for x, _, _ in pts]
    top = x_max if x_max is not None else max([1.0, *xs])

    def px(x: float) -> float:
        return L + (x / top if top else 0) * (W - R - L)

    body = [f'<text x="{px(top)}" y="{H - B + 14}" text-anchor="end">{top:g}</text>']
    body.append(f'<text x="{L}" y="{H - B + 14}" text-anchor="middle">0</text>')
    for s, (name, pts) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        ordered = sorted(pts)
        if lines and len(ordered) > 1:
            path = " ".join(f"{px(x):.1f},{_y(y):.1f}" for x, y, _ in ordered)
            body.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for x, y, label in ordered:
            body.append(
                f'<circle cx="{px(x):.1f}" cy="{_y(y):.1f}" r="4" fill="{color}">'
                f"<title>{escape(name)} {escape(label)}: ({x:g}, {y:.3f})</title></circle>"
            )
            body.append(f'<text x="{px(x) + 6:.1f}" y="{_y(y) - 6:.1f}" font-size="9">{escape(label)}</text>')
    return _frame(title, x_label, y_label, body, list(series))


def stacked_bars(
    title: str, bars: Sequence[str], stacks: dict[str, dict[str, float]], parts: Sequence[str], y_label: str
) -> str:
    """One bar per entry of ``bars`` (e.g. ``model / condition``), split into ``parts`` (e.g. the
    four outcomes) by ``stacks[bar][part]`` shares that sum to at most 1."""
    bw = (W - R - L) / max(1, len(bars))
    body = []
    for b, bar in enumerate(bars):
        x, bottom = L + b * bw + bw * 0.1, 0.0
        for p, part in enumerate(parts):
            v = stacks.get(bar, {}).get(part, 0.0)
            if v <= 0:
                continue
            y_top, y_bottom = _y(bottom + v), _y(bottom)
            body.append(
                f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bw * 0.8:.1f}" height="{y_bottom - y_top:.1f}" '
                f'fill="{PALETTE[p % len(PALETTE)]}">'
                f"<title>{escape(bar)} {escape(part)}: {v:.3f}</title></rect>"
            )
            bottom += v
        label_x, label_y = L + b * bw + bw / 2, H - B + 10
        body.append(
            f'<text x="{label_x:.1f}" y="{label_y}" text-anchor="end" font-size="9" '
            f'transform="rotate(-35 {label_x:.1f} {label_y})">{escape(bar)}</text>'
        )
    return _frame(title, "", y_label, body, list(parts))
