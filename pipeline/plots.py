"""Shared matplotlib style for the report and the stages' plots: readable at a glance.

Rules (issue 16 item 7): fonts of at least 9 pt, linear count axes with integer ticks and
thousands separators, one distinct colour per series (never a colour twice in a legend), PNG
at 100 dpi. Import matplotlib through :func:`pyplot` so the headless ``Agg`` backend is used.
"""
from __future__ import annotations

import io

#: Minimum font size (points) of any text in a plot.
MIN_FONT_PT = 9

#: Distinct colours: matplotlib's ``tab20`` pairs reordered so that neighbours differ in hue
#: first (``tab10`` dark shades, then the light ones). A plot needing more series than this
#: groups the smallest as "other" (grey, not in this list).
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
           "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5"]
OTHER_COLOUR = "#9e9e9e"

_RC = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9.5,
       "ytick.labelsize": 9.5, "legend.fontsize": 9.5, "figure.titlesize": 12, "figure.dpi": 100,
       "axes.spines.top": False, "axes.spines.right": False}


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with this module's rc settings applied."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_RC)
    return plt


def colours(n: int) -> list[str]:
    """``n`` distinct colours (``n <= len(PALETTE)``; raises ValueError otherwise)."""
    if n > len(PALETTE):
        raise ValueError(f"{n} series but only {len(PALETTE)} distinct colours: group the rest as 'other'")
    return PALETTE[:n]


def count_axis(axis) -> None:
    """Make ``axis`` (``ax.xaxis`` / ``ax.yaxis``) a linear count axis: integer ticks only, with
    thousands separators (``12,345``)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=3))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{int(round(v)):,}"))


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (tight bounding box); closes the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()
