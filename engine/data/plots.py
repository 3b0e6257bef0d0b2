"""Every figure the tool draws goes through here: one backend, one style, PNG files or data URIs.

It lives in data/ (the lowest layer that draws) so that the steps writing PNGs into their
artifacts (curate, split, train) and inspect's report/diff can all import it without breaking
the one-way layer rule. matplotlib is imported on first use only: it costs about half a second,
which commands that draw nothing (`recipe runs`, `recipe diff` without --plot) should not pay.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DPI = 100
GRID_ALPHA = 0.3
PANEL_WIDTH, PANEL_HEIGHT = 4.5, 3.4  # one histogram panel, in inches


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend: servers and CI have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def new_figure(width: float = 7.0, height: float = 3.6) -> tuple[Any, Any]:
    """A figure with one styled axes."""
    fig, ax = pyplot().subplots(figsize=(width, height), dpi=DPI)
    _style(ax)
    return fig, ax


def histograms(series: dict[str, Sequence[float]], title: str | None = None, bins: int | None = None) -> Any:
    """One histogram panel per non-empty series, side by side; None if there is nothing to plot.

    bins=None picks up to 30 bins but no more than there are distinct values, so a handful of
    short answers does not scatter into mostly empty bars.
    """
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, axes = pyplot().subplots(
        1, len(series), figsize=(PANEL_WIDTH * len(series), PANEL_HEIGHT), dpi=DPI, squeeze=False
    )
    for i, (ax, (name, values)) in enumerate(zip(axes[0], series.items(), strict=True)):
        _style(ax)
        ax.hist(values, bins=bins or min(30, max(5, len(set(values)))), color=f"C{i}", edgecolor="white")
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("rows")
        integer_ticks(ax.yaxis)  # a count of rows is whole: no 0.5 rows on the axis
        if all(float(v).is_integer() for v in values):  # word/token counts: whole too
            integer_ticks(ax.xaxis)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def integer_ticks(axis: Any) -> None:
    """Ticks only at whole numbers (a handful of rows would otherwise get 0.5, 1.5, ...)."""
    from matplotlib.ticker import MaxNLocator

    # min_n_ticks=1: with every value equal (12 answers of 32 words) the view spans one integer
    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _style(ax: Any) -> None:
    ax.grid(alpha=GRID_ALPHA)
    ax.set_axisbelow(True)  # the grid behind bars and lines, not across them


def save_png(fig: Any, path: Path) -> Path:
    """Write the figure as a PNG file (parents created) and free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png_bytes(fig))
    return path


def png_data_uri(fig: Any) -> str:
    """The figure as a data: URI, so report.html stays one self-contained file; frees it."""
    return "data:image/png;base64," + base64.b64encode(_png_bytes(fig)).decode("ascii")


def _png_bytes(fig: Any) -> bytes:
    # Closing matters: pyplot keeps every open figure alive, and a long run draws many.
    buf = io.BytesIO()
    try:
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        pyplot().close(fig)
    return buf.getvalue()
