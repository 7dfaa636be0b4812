"""Pictures readable at a glance: a relation's timeline and a comparison of two messages (matplotlib, Agg).

Figures are built with matplotlib's object API (``Figure`` on an Agg canvas), never ``pyplot``: no global state and
no display, so the service may draw in several request threads at once. Output is deterministic (fixed SVG hash salt, no
creation date), so the same timeline gives the same bytes; SVG text stays text (searchable, selectable).
"""

from __future__ import annotations

import datetime as dt
import io
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import matplotlib
import matplotlib.dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from model.bands import BANDS
from model.results import Comparison

if TYPE_CHECKING:
    from service.routes.timeline import TimelinePoint, TimelineResponse

# Pale band backgrounds, cold blue to effusive orange: the text drawn over them keeps AA contrast.
BAND_COLOURS = {
    "cold": "#dbe7f3",
    "formal": "#e6ecef",
    "cordial": "#eef1e4",
    "warm": "#fbeedb",
    "effusive": "#f9dfd3",
}
INK, MUTED, SCORE, MOVED, ABSENT = "#1f2328", "#57606a", "#0b5cad", "#b42318", "#6e40c9"
Format = Literal["png", "svg"]


def to_bytes(figure: Figure, fmt: Format) -> bytes:
    """The figure as PNG (150 dpi) or SVG bytes."""
    buffer = io.BytesIO()
    metadata = {"Date": None} if fmt == "svg" else {}
    with matplotlib.rc_context({"svg.hashsalt": "diplotone", "svg.fonttype": "none"}), warnings.catch_warnings():
        # A name in a script the bundled font lacks is drawn with empty boxes (in SVG the viewer's fonts draw it):
        # a chart to show, not a reason to refuse the request.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        figure.savefig(buffer, format=fmt, dpi=150, metadata=metadata, bbox_inches="tight")
    return buffer.getvalue()


@dataclass(frozen=True)
class _Drawn:
    """A scored point in matplotlib's date numbers; ``change`` only where it moved beyond the interval."""

    day: float
    score: float
    low: float
    high: float
    change: float | None

    @classmethod
    def of(cls, point: TimelinePoint) -> _Drawn:
        assert point.date is not None and point.score is not None and point.interval is not None
        moved = point.change if point.moved else None
        return cls(_day(point.date), point.score, point.interval[0], point.interval[1], moved)


def _day(day: dt.date) -> float:
    return float(mdates.date2num(day))  # type: ignore[no-untyped-call]


def _figure(size: tuple[float, float]) -> Figure:
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)  # the Agg backend, explicitly: raster output without a display
    return figure


def _bands(axes: Axes, *, vertical: bool = False) -> None:
    """The five bands as background, named at the edge."""
    for name, low, high in BANDS:
        if vertical:
            axes.axvspan(low, high, color=BAND_COLOURS[name], zorder=0, lw=0)
            axes.text(
                (low + high) / 2,
                1.01,
                name,
                transform=axes.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=8,
                color=MUTED,
            )
        else:
            axes.axhspan(low, high, color=BAND_COLOURS[name], zorder=0, lw=0)
            axes.text(
                1.005,
                (low + high) / 2,
                name,
                transform=axes.get_yaxis_transform(),
                va="center",
                fontsize=8,
                color=MUTED,
            )


NAME_CHARS = 60  # a longer name is cut in a chart's title: past the figure's width it collapses the plot to nothing


def _shortened(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"


def timeline_figure(timeline: TimelineResponse) -> Figure:
    """Score and 90% interval over time on the bands; moves beyond the interval and absences labelled."""
    figure = _figure((10, 4.8))
    axes = figure.add_subplot()
    _bands(axes)
    scored = [_Drawn.of(p) for p in timeline.messages if p.date and p.score is not None and p.interval]
    unpublished = [_day(p.date) for p in timeline.messages if p.date is not None and not p.published]
    undated = sum(p.date is None for p in timeline.messages)
    if scored:
        days = [d.day for d in scored]
        axes.fill_between(
            days,
            [d.low for d in scored],
            [d.high for d in scored],
            color=SCORE,
            alpha=0.15,
            lw=0,
            label="90% interval",
            zorder=1,
        )
        axes.plot(days, [d.score for d in scored], color=SCORE, marker="o", ms=5, lw=1.6, label="score", zorder=3)
        for drawn in scored:
            if drawn.change is not None:
                axes.plot([drawn.day], [drawn.score], "o", ms=10, mfc="none", mec=MOVED, mew=2, zorder=4)
                axes.annotate(
                    f"moved {drawn.change:+.0f}",
                    (drawn.day, drawn.score),
                    textcoords="offset points",
                    xytext=(0, 10 if drawn.change > 0 else -16),
                    ha="center",
                    fontsize=8,
                    color=MOVED,
                    fontweight="bold",
                )
    for day in unpublished:
        axes.plot([day], [2], marker="D", ms=6, mfc="white", mec=INK, zorder=4, ls="none")
        axes.annotate(
            "unpublished", (day, 2), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7, color=INK
        )
    for absence in timeline.absences:
        start, end = _day(absence.start), _day(absence.end)
        if absence.kind == "expected_occasion":
            axes.axvline(start, color=ABSENT, ls="--", lw=1.2, zorder=2)
            axes.text(
                start,
                97,
                f"no {absence.occasion} {absence.year}",
                rotation=90,
                va="top",
                ha="right",
                fontsize=8,
                color=ABSENT,
            )
        else:
            axes.axvspan(start, end, color=ABSENT, alpha=0.08, lw=0, zorder=1)
            axes.text((start + end) / 2, 50, "silence", ha="center", fontsize=8, color=ABSENT, style="italic")
    axes.set_ylim(0, 100)
    axes.set_ylabel("effusiveness (0–100)", color=INK)
    if scored or unpublished or timeline.absences:
        axes.xaxis_date()
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axes.xaxis.get_major_locator()))  # type: ignore[no-untyped-call]
    title = f"{_shortened(timeline.sender)} → {_shortened(timeline.recipient)}"
    absences = len(timeline.absences)
    counts = f"{len(scored)} scored, {len(unpublished)} unpublished, {absences} absence{'' if absences == 1 else 's'}"
    if undated:
        counts += f", {undated} undated not drawn"
    axes.set_title(f"{title}\n{counts}", loc="left", fontsize=10, color=INK)
    if not scored and not unpublished:
        axes.text(0.5, 0.5, "no dated messages", transform=axes.transAxes, ha="center", color=MUTED)
        axes.set_xticks([])
    if scored:
        axes.legend(loc="lower left", fontsize=8, frameon=True)
    for spine in ("top", "right"):
        axes.spines[spine].set_visible(False)
    return figure


def compare_figure(comparison: Comparison, labels: tuple[str, str] = ("A", "B")) -> Figure:
    """Both scores with their intervals on the bands, and the marker counts side by side."""
    figure = _figure((9, 5))
    scores, markers = figure.subplots(2, 1, height_ratios=[1, 1.6])
    _bands(scores, vertical=True)
    for row, result in enumerate((comparison.a, comparison.b)):
        low, high = result.interval
        scores.plot([low, high], [row, row], color=SCORE, lw=6, alpha=0.35, solid_capstyle="butt")
        scores.plot([result.score], [row], "o", color=SCORE, ms=9)
        scores.text(result.score, row + 0.28, f"{result.score:.1f} ({result.band})", ha="center", fontsize=9, color=INK)
    scores.set_yticks([0, 1], list(labels))
    scores.set_ylim(-0.6, 1.7)
    scores.set_xlim(0, 100)
    scores.invert_yaxis()
    scores.set_title(
        f"B − A = {comparison.delta:+.1f}    P(B warmer) = {comparison.p_b_warmer:.2f}",
        loc="left",
        fontsize=10,
        color=INK,
        pad=16,
    )
    changes = comparison.explanation.markers
    positions = range(len(changes))
    markers.barh([p - 0.2 for p in positions], [c.a for c in changes], height=0.4, color="#8c959f", label=labels[0])
    markers.barh([p + 0.2 for p in positions], [c.b for c in changes], height=0.4, color=SCORE, label=labels[1])
    markers.set_yticks(list(positions), [c.label for c in changes], fontsize=8)
    markers.invert_yaxis()
    markers.set_xlabel("markers found", color=INK)
    markers.legend(fontsize=8, loc="lower right")
    for axes in (scores, markers):
        for spine in ("top", "right"):
            axes.spines[spine].set_visible(False)
    return figure
