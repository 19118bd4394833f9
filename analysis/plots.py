"""Sensitivity plots (probe accuracy, SSIM, codebook usage against K, D and beta) and SSIM vs probe.

Figures are built with matplotlib's object API (no pyplot), so no GUI backend and no
global figure state: safe from a notebook, a test or a headless server.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.measures import KNN, LINEAR, MLP, PERPLEXITY, PIXEL_COLUMNS, SSIM, USAGE, Measure
from analysis.selection import finished
from analysis.stats import CONFIDENCE, Estimate, t_interval
from analysis.tables import DATASET_NAMES, MODEL_NAMES, dataset_rank
from benchmark.config import DEFAULT_KL_WEIGHT

KNOBS = {
    "num_codes": "K (codebook size)",
    "code_dim": "D (code dimension)",
    "beta": "beta (commitment cost)",
    "kl_weight": "KL weight (VAE)",
}
SENSITIVITY_MEASURES = (MLP, LINEAR, SSIM, USAGE, PERPLEXITY)
COLOURS = {"vae": "tab:blue", "vqvae": "tab:orange"}
MARKERS = {"none": "o", "add": "^"}
# What each metric can take. A figure's band or bar for a mean over seeds is a t interval computed on a scale that
# cannot leave this range (logit of the position inside a closed range, log above a lower bound), then mapped back:
# with 2 seeds a t interval on the metric's own scale is 12.7 standard errors wide and passes 100% or SSIM 1.
METRIC_RANGE = {
    MLP.column: (0.0, 1.0),
    LINEAR.column: (0.0, 1.0),
    KNN.column: (0.0, 1.0),
    USAGE.column: (0.0, 1.0),
    SSIM.column: (-1.0, 1.0),
    PERPLEXITY.column: (0.0, np.inf),
    **{c: (0.0, 1.0) for c in PIXEL_COLUMNS.values()},
}
EDGE = 1e-4  # values at a bound are moved this fraction of the range inside it before the logit (logit(0) is -inf)
INTERVAL_RULE = (
    f"Bands and error bars in the figures: the mean over seeds with a {CONFIDENCE:.0%} Student t interval (n - 1 degrees "
    "of freedom, n = seeds) computed on a scale that cannot leave the metric's range and mapped back: the logit of "
    "accuracies, codebook usage and other proportions (range [0, 1]) and of (SSIM + 1) / 2 (SSIM's range [-1, 1]), the "
    "log of perplexity (> 0), so no band passes 0, 100% or SSIM 1; values at a bound are moved 0.01% of the range "
    "inside it first, and seeds that agree exactly give a band of zero width. The ± in the tables is the half-width "
    "of the symmetric t interval on the metric's own scale (the verdict arithmetic's), which can pass a bound at "
    "small n. The verdicts' intervals of differences (paired t, two-level bootstrap) are intervals of a difference, "
    "not of a bounded metric, and are not bounded this way."
)
DPI = 110  # every figure is saved at this resolution
PROBE_AXIS = "MLP-probe accuracy on the test latents (%)"
MAX_LINE_POINTS = 12
MIN_TICK_GAP = 0.12  # of the axis' span, between two labelled ticks
LEGEND_CHARS_PER_INCH = 15.5  # DejaVu Sans at 9 pt, average text
TITLE_CHARS_PER_INCH = 12.5  # at 11 pt  # beyond this many distinct values (a random search), plot the runs as points


def knob_values(runs: pd.DataFrame, knob: str) -> list[float]:
    """The distinct values of a knob among finished runs that have it (K and beta: VQ-VAE only)."""
    values = finished(runs)[knob].dropna()
    return sorted(float(v) for v in values.unique())


def figure_interval(values, column: str) -> Estimate:
    """Mean and t interval of `values` (one per seed) for a figure: computed on a scale inside the metric's range
    (METRIC_RANGE; the plain t interval for a metric without one) and mapped back, so it never leaves the range.
    The mean is the plain mean; the interval is widened to hold it if the transform would leave it outside."""
    x = np.asarray(list(values), dtype=float)
    x = x[~np.isnan(x)]
    plain = t_interval(x)
    if column not in METRIC_RANGE or not plain.has_interval or plain.low == plain.high:
        return plain
    low, high = METRIC_RANGE[column]
    if np.isfinite(high):
        width = high - low
        u = np.clip((x - low) / width, EDGE, 1 - EDGE)
        z = t_interval(np.log(u / (1 - u)))
        back = [low + width / (1 + np.exp(-v)) for v in (z.low, z.high)]
    else:
        z = t_interval(np.log(np.maximum(x - low, EDGE)))
        back = [low + np.exp(v) for v in (z.low, z.high)]
    return Estimate(plain.mean, float(min(back[0], plain.mean)), float(max(back[1], plain.mean)), plain.n)


def per_seed_interval(runs: pd.DataFrame, column: str) -> Estimate:
    """`figure_interval` over seeds of `column`, each seed's runs averaged first."""
    if column not in runs:
        return t_interval([])
    return figure_interval(runs.groupby("seed")[column].mean(), column)


def seeds_label(counts) -> str:
    """'n = 3 seeds' or 'n = 2-3 seeds' (per point) for a legend or title."""
    counts = sorted({int(c) for c in counts if c})
    if not counts:
        return "n = 0 seeds"
    return f"n = {counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]} seeds"


def band_clause(counts, what: str) -> str:
    """What a figure's bands (or bars) are; that there are none where every point rests on one seed."""
    if max(counts, default=0) <= 1:
        return f"no {what}s: one seed per point"
    return f"{what}: {CONFIDENCE:.0%} t interval on the metric's bounded scale"


def sensitivity_figure(runs: pd.DataFrame, knob: str, path: Path) -> Path | None:
    """Probe accuracies, SSIM and codebook usage and perplexity against one knob, a panel per dataset;
    the VAE at the default KL weight and the raw-pixel probe as horizontal reference bands. None
    (nothing written) where the knob takes fewer than two values."""
    every = finished(runs)
    done = every[every[knob].notna()]
    if len(knob_values(done, knob)) < 2:
        return None
    datasets = sorted(done["dataset"].unique(), key=dataset_rank)
    measures = [m for m in SENSITIVITY_MEASURES if m.column in done and done[m.column].notna().any()]
    fig = Figure(figsize=(max(4.2 * len(datasets), 5.0), 3.0 * len(measures)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(measures), len(datasets), squeeze=False))
    counts: list[int] = []
    for col, dataset in enumerate(datasets):
        for row, measure in enumerate(measures):
            ax = axes[row, col]
            counts += _draw_lines(ax, done[done["dataset"] == dataset], knob, measure)
            _reference_bands(ax, every[every["dataset"] == dataset], knob, measure)
            if not np.isfinite(METRIC_RANGE.get(measure.column, (0.0, 1.0))[1]):
                _cut_open_bands(ax)
            ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: {measure.title.split(' (')[0]}", fontsize=10)
            ax.set_xlabel(KNOBS[knob])
            ax.set_ylabel(measure.title)
            ax.grid(alpha=0.3)
            _scale_axis(ax, knob_values(done, knob), knob)
    legend_below(fig, axes.flat)
    suptitle(fig, f"Sensitivity to {KNOBS[knob]}\nline: mean over seeds ({seeds_label(counts)} per point); " + band_clause(counts, "band"))
    return save(fig, path)


def _draw_lines(ax, frame: pd.DataFrame, knob: str, measure: Measure) -> list[int]:
    """The families' lines and bands; returns the seed count of every point drawn with a mean."""
    scale = 100 if measure.percent else 1
    counts: list[int] = []
    for (model, label), group in _by_model_and_label(frame):
        group = group[group[measure.column].notna()] if measure.column in group else group.iloc[0:0]
        if group.empty:
            continue
        name = family_name(model, label)
        style = {"color": COLOURS.get(model), "marker": MARKERS.get(label, "o"), "label": name}
        if group[knob].nunique() > MAX_LINE_POINTS:
            ax.scatter(group[knob].astype(float), group[measure.column] * scale, s=14, alpha=0.7, **style)
            continue
        xs, means, lows, highs = [], [], [], []
        for x, at in group.groupby(knob, sort=True):
            # other knobs of a grid are averaged within a seed first: the band is seed-to-seed variation
            est = figure_interval(at.groupby("seed")[measure.column].mean(), measure.column)
            counts.append(est.n)
            xs.append(float(x))
            means.append(est.mean * scale)
            lows.append((est.low if est.has_interval else est.mean) * scale)
            highs.append((est.high if est.has_interval else est.mean) * scale)
        ax.plot(xs, means, markersize=5, **style)
        if len(xs) == 1:  # a band over one value has no width: a bar instead
            ax.errorbar(xs, means, yerr=[[means[0] - lows[0]], [highs[0] - means[0]]], color=style["color"], capsize=3, linewidth=1)
        else:
            ax.fill_between(xs, lows, highs, color=style["color"], alpha=0.18, linewidth=0)
    return counts


OPEN_VIEW = 2.0  # a metric without an upper bound (perplexity) is shown up to this multiple of its largest mean


def _cut_open_bands(ax) -> None:
    """A log-scale t interval of a metric with no upper bound can reach far above the data with 2 seeds (the band is right:
    2 seeds do not pin it down); the axis stops at OPEN_VIEW times the largest mean and says where a band runs past it."""
    means = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float) if np.isfinite(y)]
    if not means or max(means) <= 0:
        return
    top = OPEN_VIEW * max(means)
    if ax.dataLim.y1 > top:
        ax.set_ylim(0, top)
        ax.text(
            0.99, 0.97, "band cut at the top edge: it runs higher", transform=ax.transAxes, ha="right", va="top", fontsize=7, color="0.3"
        )


def _reference_bands(ax, runs: pd.DataFrame, knob: str, measure: Measure) -> None:
    """Horizontal bands, mean and bounded 95% t interval over seeds: the VAE at the default KL weight (where the knob is not the
    VAE's own) and raw pixels; the legend names the seed count."""
    scale = 100 if measure.percent else 1
    references = []
    vae = runs[(runs["model"] == "vae") & (runs["label_embedding"] == "none")]
    vae = vae[np.isclose(vae["kl_weight"].astype(float), DEFAULT_KL_WEIGHT)]
    if knob not in ("code_dim", "kl_weight") and not vae.empty:
        references.append((f"VAE, KL weight {DEFAULT_KL_WEIGHT:g}", COLOURS["vae"], per_seed_interval(vae, measure.column)))
    pixel_column = PIXEL_COLUMNS.get(measure.short)
    if pixel_column is not None and pixel_column in runs:
        references.append(("raw pixels", "0.35", per_seed_interval(runs, pixel_column)))
    for name, colour, est in references:
        if np.isnan(est.mean):
            continue
        ax.axhline(
            est.mean * scale,
            color=colour,
            linestyle="--",
            linewidth=1,
            label=f"{name} (mean{f', band {CONFIDENCE:.0%} t' if est.has_interval else ''}, {seeds_label([est.n])})",
        )
        if est.has_interval:
            ax.axhspan(est.low * scale, est.high * scale, color=colour, alpha=0.12, linewidth=0)


def _scale_axis(ax, values: list[float], knob: str) -> None:
    """Powers of two (K, D) on a log2 axis, KL weights on a log10 axis, with the values as ticks."""
    if knob in ("num_codes", "code_dim") and values and min(values) > 0 and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
    if knob == "kl_weight" and values and min(values) > 0 and max(values) / min(values) >= 10:
        ax.set_xscale("log")
    if len(values) <= MAX_LINE_POINTS:
        logarithmic = ax.get_xscale() == "log"
        place = [np.log(v) if logarithmic else v for v in values]
        gap = MIN_TICK_GAP * (max(place) - min(place))
        shown, last = [], None  # a searched knob's values can sit close together: skip a tick that would touch the one before
        for value, at in zip(values, place):
            if last is None or at - last >= gap:
                shown.append(value)
                last = at
        ax.set_xticks(shown, [f"{v:.3g}" for v in shown])
        ax.minorticks_off()


def ssim_vs_probe_figure(runs: pd.DataFrame, path: Path) -> Path | None:
    """One point per finished run: SSIM against MLP-probe accuracy, coloured by model, a panel per dataset."""
    done = finished(runs)
    if MLP.column not in done or SSIM.column not in done:
        return None
    done = done[done[MLP.column].notna() & done[SSIM.column].notna()]
    if done.empty:
        return None
    datasets = sorted(done["dataset"].unique(), key=dataset_rank)
    fig, axes = dataset_panels(datasets, 4.2, 5.0, 3.6)
    for ax, dataset in zip(axes, datasets):
        here = done[done["dataset"] == dataset]
        for (model, label), group in _by_model_and_label(here):
            name = family_name(model, label)
            ax.scatter(
                group[MLP.column] * 100,
                group[SSIM.column],
                color=COLOURS.get(model),
                marker=MARKERS.get(label, "o"),
                s=22,
                alpha=0.75,
                label=name,
                edgecolors="none",
            )
        ax.set_title(f"{DATASET_NAMES.get(dataset, dataset)}: MLP probe against SSIM", fontsize=10)
        ax.set_xlabel(PROBE_AXIS)
        ax.set_ylabel("SSIM (test reconstructions)")
        ax.grid(alpha=0.3)
    legend_below(fig, axes)
    suptitle(fig, "Reconstruction (SSIM) against MLP-probe accuracy\none point per run (no interval)")
    return save(fig, path)


def dataset_panels(datasets: list[str], panel_width: float, min_width: float, height: float, **figure: object) -> tuple[Figure, np.ndarray]:
    """One panel per dataset, side by side: the layout every per-dataset figure of the report shares."""
    fig = Figure(figsize=(max(panel_width * len(datasets), min_width), height), layout="constrained", **figure)
    return fig, np.atleast_1d(fig.subplots(1, len(datasets), squeeze=False)[0])


def family_name(model: str, label: str) -> str:
    """A legend's name for a model family: 'VQ-VAE', or 'VQ-VAE + label emb.' for runs with the label embedding."""
    return MODEL_NAMES.get(model, model) + (" + label emb." if label == "add" else "")


def _by_model_and_label(frame: pd.DataFrame):
    """VAE before VQ-VAE, without the label embedding before with it: a stable legend order."""
    groups = frame.groupby(["model", "label_embedding"])
    return sorted(groups, key=lambda kv: (str(kv[0][0]), kv[0][1] != "none", str(kv[0][1])))


def probe_vs_ssim_axes(ax, runs: pd.DataFrame, title: str, xlabel: str, pixels_label: str) -> None:
    """The raw-pixel MLP probe as a dashed line (where the runs have it), title, labels and grid of a probe-against-SSIM panel."""
    pixels = per_seed_interval(runs, PIXEL_COLUMNS[MLP.short]) if PIXEL_COLUMNS[MLP.short] in runs else None
    if pixels is not None and not np.isnan(pixels.mean):
        ax.axhline(100 * pixels.mean, color="0.35", linestyle="--", linewidth=1, label=f"{pixels_label} (mean, {seeds_label([pixels.n])})")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(PROBE_AXIS)
    ax.grid(alpha=0.3)


N_SEEDS = re.compile(r"n = (\d+)(?:-(\d+))? seeds?")


def legend_below(fig: Figure, axes, max_columns: int = 4) -> None:
    """One legend under the panels, each label once, whichever panels drew it, in as many columns as fit the figure's width.
    Labels that differ only in their seed count ("n = 3 seeds", "n = 5 seeds") are one entry with the range ("n = 3-5 seeds")."""
    by_label, counts = {}, {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            key = N_SEEDS.sub("{n}", label)
            by_label.setdefault(key, handle)
            counts.setdefault(key, set()).update(int(v) for m in N_SEEDS.finditer(label) for v in m.groups() if v)
    labels = [key.replace("{n}", seeds_label(counts[key])) if counts[key] else key for key in by_label]
    if by_label:
        column_inches = (max(len(label) for label in labels) + 6) / LEGEND_CHARS_PER_INCH
        fitting = max(1, int(fig.get_figwidth() // column_inches))
        fig.legend(list(by_label.values()), labels, loc="outside lower center", ncols=min(len(labels), max_columns, fitting), fontsize=9)


def suptitle(fig: Figure, text: str, fontsize: int = 11) -> None:
    """The figure's title, each line wrapped to the figure's width (a long caption line is otherwise cut off)."""
    width = max(20, int(fig.get_figwidth() * TITLE_CHARS_PER_INCH * 11 / fontsize))
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in text.split("\n")), fontsize=fontsize)


def save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
