"""Small self-contained SVG charts (no plotting library, no network at view time)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")
W, H, L, R, T, B = 660, 320, 56, 190, 30, 48  # size and margins


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
        parts.append(f'<text x="{W - R + 59}" y="{y + 9}">{escape(name[:22])}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _y(v: float) -> float:
    return H - B - max(0.0, min(1.0, v)) * (H - B - T)


def grouped_bars(title: str, groups: Sequence[str], series: dict[str, dict[str, float]], y_label: str) -> str:
    """One group of bars per entry of ``groups`` (e.g. condition), one bar per series (model)."""
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
            body.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" height="{H - B - y:.1f}" fill="{color}">'
                f"<title>{escape(name)} {escape(group)}: {v:.3f}</title></rect>"
            )
    return _frame(title, "", y_label, body, names)


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
