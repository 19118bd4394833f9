"""The accuracy-for-reconstruction frontier: MLP probe against SSIM, the VAE along its KL weight, the VQ-VAE along K.

Its point labels are placed so that no two overlap and none covers a point (`place_labels`): the figure is read
by its labels, a config per point.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from analysis import plots
from analysis.measures import MLP, SSIM
from analysis.plots import COLOURS, legend_below, probe_vs_ssim_axes, save
from analysis.selection import finished, plain_quantizer
from analysis.tables import DATASET_NAMES, dataset_rank
from benchmark.config import PAPER_VQ

AT_PAPER_D_BETA = f"D={PAPER_VQ['code_dim']}, beta={PAPER_VQ['beta']:g}"  # where the VQ-VAE's K axis is drawn


def _points(runs: pd.DataFrame, model: str, along: str) -> pd.DataFrame:
    """Mean and t interval of SSIM and MLP accuracy per value of `along` (the other knobs at the centre)."""
    here = runs[runs["model"] == model]
    if model == "vqvae":
        for key, value in PAPER_VQ.items():
            if key != along:
                here = here[np.isclose(here[key].astype(float), value)]
    rows = []
    for value, at in here.groupby(along, sort=True):
        ssim, mlp = plots.per_seed_interval(at, SSIM.column), plots.per_seed_interval(at, MLP.column)
        rows.append(
            {
                "value": float(value),
                "ssim": ssim.mean,
                "ssim_low": ssim.low,
                "ssim_high": ssim.high,
                "mlp": mlp.mean,
                "mlp_low": mlp.low,
                "mlp_high": mlp.high,
                "n": min(ssim.n, mlp.n),
            }
        )
    return pd.DataFrame(rows)


def frontier_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """Probe accuracy against SSIM, a point per config with its intervals: the VAE joined along the KL weight,
    the VQ-VAE along K, raw pixels as a line. None (nothing written) where neither family varies."""
    fig = frontier_plot(runs)
    return None if fig is None else save(fig, path)


def frontier_plot(runs: pd.DataFrame) -> Figure | None:
    """The frontier figure, laid out and its point labels placed so that no two overlap (see `place_labels`)."""
    done = plain_quantizer(finished(runs))
    done = done[done["label_embedding"] == "none"]
    curves = {("vae", "kl_weight"): "VAE along the KL weight", ("vqvae", "num_codes"): f"VQ-VAE along K ({AT_PAPER_D_BETA})"}
    datasets = [
        d
        for d in sorted(done["dataset"].unique(), key=dataset_rank)
        if any(len(_points(done[done["dataset"] == d], m, k)) >= 2 for m, k in curves)
    ]
    if not datasets:
        return None
    fig, axes = plots.dataset_panels(datasets, 4.8, 5.5, 4.4, dpi=plots.DPI)
    labels, counts = [], []
    for ax, dataset in zip(axes, datasets):
        here = done[done["dataset"] == dataset]
        for (model, knob), name in curves.items():
            points = _points(here, model, knob)
            if points.empty:
                continue
            counts += list(points["n"])
            xerr = [points["ssim"] - points["ssim_low"].fillna(points["ssim"]), points["ssim_high"].fillna(points["ssim"]) - points["ssim"]]
            yerr = [
                100 * (points["mlp"] - points["mlp_low"].fillna(points["mlp"])),
                100 * (points["mlp_high"].fillna(points["mlp"]) - points["mlp"]),
            ]
            ax.errorbar(
                points["ssim"],
                100 * points["mlp"],
                xerr=xerr,
                yerr=yerr,
                color=COLOURS[model],
                marker="o",
                markersize=5,
                capsize=2,
                linewidth=1.2,
                label=f"{name} ({plots.seeds_label(points['n'])} per point)",
            )
            shown = (lambda v: f"KL {v:.3g}") if knob == "kl_weight" else (lambda v: f"K={v:g}")
            for row in points.itertuples():
                text = ax.annotate(
                    shown(row.value),
                    (row.ssim, 100 * row.mlp),
                    textcoords="offset points",
                    xytext=(4, 4),
                    fontsize=7,
                    color=COLOURS[model],
                    arrowprops={"arrowstyle": "-", "color": COLOURS[model], "lw": 0.5, "shrinkA": 0, "shrinkB": 2},
                )
                text.set_in_layout(False)
                labels.append(text)
        probe_vs_ssim_axes(
            ax,
            here,
            f"{DATASET_NAMES.get(dataset, dataset)}: MLP probe against SSIM",
            "SSIM (test reconstructions)",
            "raw pixels, MLP probe",
        )
    legend_below(fig, axes, max_columns=2)
    plots.suptitle(
        fig,
        "Probe accuracy against reconstruction quality, label embedding none\n"
        f"mean over seeds ({plots.seeds_label(counts)} per point); " + plots.band_clause(counts, "bar"),
    )
    place_labels(fig, labels)
    return fig


# Offsets (points) tried in turn for a point's label: beside it first, then further out; a thin line joins a moved label to its point.
LABEL_OFFSETS = [
    (4, 4),
    (4, -11),
    (-8, 6),
    (-8, -12),
    (10, 14),
    (10, -20),
    (-16, 16),
    (-16, -22),
    (18, 26),
    (18, -32),
    (-26, 28),
    (-26, -34),
    (28, 40),
    (28, -46),
    (-36, 42),
    (-36, -48),
    (4, 56),
    (4, -62),
]


def place_labels(fig: Figure, labels: list) -> None:
    """Move each annotation to the first offset where its box meets no label already placed (nor leaves its axes), by
    matplotlib's text extents after layout; where none is free, the offset whose box overlaps least. The labels stay
    out of the layout, so placing them cannot move the axes they were measured in."""
    canvas = FigureCanvasAgg(fig)  # the canvas savefig uses; measured at the figure's dpi, which `save` keeps
    canvas.draw()
    renderer = canvas.get_renderer()
    placed = []  # the labels placed so far, and a small box around every labelled point (a label should not hide a point)
    points = [text.axes.transData.transform(text.xy) for text in labels]
    marks = [Bbox.from_bounds(x - 4, y - 4, 8, 8) for x, y in points]
    for text in labels:
        frame = text.axes.get_window_extent(renderer)
        best, best_cost = None, None
        for offset in LABEL_OFFSETS:
            text.xyann = offset
            box = _text_box(text, renderer)
            cost = sum(_overlap(box, other) for other in placed) + 0.5 * sum(_overlap(box, mark) for mark in marks)
            outside = max(0.0, frame.x0 - box.x0) + max(0.0, box.x1 - frame.x1) + max(0.0, frame.y0 - box.y0) + max(0.0, box.y1 - frame.y1)
            cost += outside * box.height
            if best_cost is None or cost < best_cost:
                best, best_cost = offset, cost
            if cost == 0:
                break
        text.xyann = best
        placed.append(_text_box(text, renderer).expanded(1.05, 1.1))
        if best == LABEL_OFFSETS[0]:
            text.arrow_patch.set_visible(False)


def _text_box(text, renderer):
    """An annotation's text box in display space, without its leader line."""
    text.update_positions(renderer)
    return Text.get_window_extent(text, renderer)


def _overlap(a, b) -> float:
    """The area two display-space boxes share (0 where they do not meet)."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)
