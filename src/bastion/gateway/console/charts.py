"""Inline SVG charts (no script): decisions over time as stacked bars, and a risk line over an agent's calls."""

from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD = 640, 160, 24


@dataclass(frozen=True)
class Bar:
    """One time bucket: its label and how many decisions allowed and denied."""

    label: str
    allowed: int
    denied: int


def decision_bars(bars: Sequence[Bar], title: str) -> Markup:
    """Stacked bars of allowed (below) and denied (above) decisions per bucket, with a title for screen readers."""
    top = max((bar.allowed + bar.denied for bar in bars), default=0) or 1
    step = (WIDTH - 2 * PAD) / max(len(bars), 1)
    shapes: list[str] = []
    for index, bar in enumerate(bars):
        x = PAD + index * step
        allowed_h = (HEIGHT - 2 * PAD) * bar.allowed / top
        denied_h = (HEIGHT - 2 * PAD) * bar.denied / top
        base = HEIGHT - PAD
        tip = escape(f"{bar.label}: {bar.allowed} allowed, {bar.denied} denied")
        shapes.append(f'<g><title>{tip}</title>'
                      f'<rect class="bar-allow" x="{x:.1f}" y="{base - allowed_h:.1f}" width="{step * 0.8:.1f}" '
                      f'height="{allowed_h:.1f}"/>'
                      f'<rect class="bar-deny" x="{x:.1f}" y="{base - allowed_h - denied_h:.1f}" '
                      f'width="{step * 0.8:.1f}" height="{denied_h:.1f}"/></g>')
    labels = ""
    if bars:
        labels = (f'<text x="{PAD}" y="{HEIGHT - 6}" class="axis">{escape(bars[0].label)}</text>'
                  f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="axis" text-anchor="end">'
                  f'{escape(bars[-1].label)}</text>')
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
                  f'<title>{escape(title)}</title>'
                  f'<text x="{PAD}" y="14" class="axis">max {top}</text>{"".join(shapes)}{labels}</svg>')


def risk_line(points: Sequence[float], threshold: float | None, title: str) -> Markup:
    """A line of risk (0-1) over an agent's calls in order, with the detector's threshold dashed."""
    if not points:
        return Markup('<p class="muted">No scored calls yet.</p>')
    step = (WIDTH - 2 * PAD) / max(len(points) - 1, 1)

    def y(value: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * min(max(value, 0.0), 1.0)

    path = " ".join(f"{PAD + i * step:.1f},{y(v):.1f}" for i, v in enumerate(points))
    line = (f'<line class="threshold" x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}"/>'
            if threshold is not None else "")
    return Markup(f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
                  f'<title>{escape(title)}</title>{line}<polyline class="risk" points="{path}"/>'
                  f'<text x="{PAD}" y="14" class="axis">1.0</text>'
                  f'<text x="{PAD}" y="{HEIGHT - 6}" class="axis">call 1</text>'
                  f'<text x="{WIDTH - PAD}" y="{HEIGHT - 6}" class="axis" text-anchor="end">call {len(points)}</text>'
                  f'</svg>')
