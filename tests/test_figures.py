"""What a reader sees in the report's figures: intervals inside each metric's range, every band and bar named with its
statistic and n, labels that do not collide, titles naming the dataset and the probe, and reports that rebuild whole
from a committed CSV into an empty folder."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Annotation, Text

from analysis import frontier, measures, plots, tables
from analysis.report import main as report_main
from analysis.runs_csv import read_runs_csv
from analysis.stats import t_interval

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "results" / "sensitivity" / "runs-mnist-vq-K-bf16.csv"
MLP, SSIM, PERPLEXITY, USAGE = measures.MLP.column, measures.SSIM.column, measures.PERPLEXITY.column, measures.USAGE.column


def runs_frame(specs: list[dict]) -> pd.DataFrame:
    """Finished runs built from a committed CSV's first row: each spec overrides config columns and metrics."""
    template = read_runs_csv([TEMPLATE]).iloc[0]
    rows = []
    for i, spec in enumerate(specs):
        row = template.copy()
        row["run_id"], row["config_id"], row["run_name"] = f"run{i}", f"config{i}", f"run-{i}"
        row["label_embedding"], row["status"], row["stopped_at_epoch"] = "none", "FINISHED", np.nan
        for key, value in spec.items():
            row[key] = value
        if row["model"] == "vae":
            row["num_codes"], row["beta"] = np.nan, np.nan
            for column in (USAGE, PERPLEXITY):
                row[column] = np.nan
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True)


def two_seed_runs(dataset: str = "CIFAR-10-images", ks=(16, 64, 256, 2048)) -> pd.DataFrame:
    """Two seeds far apart near the top of every range (as the quick sweep's): a plain t interval passes 100%, SSIM 1, perplexity 0."""
    specs = []
    for seed, (acc, ssim, perplexity) in enumerate([(0.995, 0.99, 1.5), (0.90, 0.70, 40.0)]):
        for i, k in enumerate(ks):
            specs.append(
                {
                    "model": "vqvae",
                    "dataset": dataset,
                    "seed": seed,
                    "num_codes": k,
                    "code_dim": 64,
                    "beta": 0.25,
                    MLP: acc - 0.002 * i,
                    SSIM: ssim - 0.003 * i,
                    USAGE: 1.0 - 0.2 * seed,
                    PERPLEXITY: perplexity + i,
                }
            )
        for kl in (0.01, 0.1):
            specs.append(
                {
                    "model": "vae",
                    "dataset": dataset,
                    "seed": seed,
                    "kl_weight": kl,
                    "code_dim": 64,
                    MLP: acc - 0.01 * (kl == 0.1),
                    SSIM: ssim - 0.05 * (kl == 0.1),
                }
            )
    return runs_frame(specs)


def captured(monkeypatch, module) -> list:
    """The figures `module`'s save() is given, drawn as savefig draws them."""
    figures = []

    def keep(fig, path):
        FigureCanvasAgg(fig).draw()
        figures.append(fig)
        return path

    monkeypatch.setattr(module, "save", keep)
    return figures


# --- 1: intervals inside the metric's range ----------------------------------------------------


def test_figure_intervals_stay_inside_each_metric_range():
    cases = [
        (MLP, [0.995, 0.90], 0.0, 1.0),
        (USAGE, [1.0, 0.8], 0.0, 1.0),
        (SSIM, [0.99, 0.70], -1.0, 1.0),
        (SSIM, [-0.99, -0.2], -1.0, 1.0),
        (PERPLEXITY, [1.5, 40.0], 0.0, np.inf),
        (MLP, [0.02, 0.3, 0.01], 0.0, 1.0),
    ]
    for column, values, low, high in cases:
        plain = t_interval(values)
        assert plain.low < low or plain.high > high  # the symmetric t interval leaves the range here
        est = plots.figure_interval(values, column)
        assert low <= est.low <= est.mean <= est.high <= high, (column, values, est)
        assert est.mean == pytest.approx(np.mean(values)) and est.n == len(values)
    assert plots.figure_interval([1.0, 1.0, 1.0], USAGE).high == 1.0  # seeds that agree: a band of zero width
    inside = plots.figure_interval([0.5, 0.52, 0.51, 0.49, 0.50], MLP)  # far from a bound: close to the plain t interval
    assert inside.low == pytest.approx(t_interval([0.5, 0.52, 0.51, 0.49, 0.50]).low, abs=1e-3)


def test_bands_and_bars_of_every_figure_stay_inside_the_range(monkeypatch):
    runs = two_seed_runs()
    figures = captured(monkeypatch, frontier)
    frontier.frontier_figure(runs, Path("unused.png"))
    (fig,) = figures
    for ax in fig.axes:
        for collection in ax.collections:  # error bars: one segment per point and axis
            for segment in collection.get_segments():
                xs, ys = segment[:, 0], segment[:, 1]
                assert (xs >= -1 - 1e-9).all() and (xs <= 1 + 1e-9).all(), xs  # SSIM
                assert (ys >= -1e-9).all() and (ys <= 100 + 1e-9).all(), ys  # accuracy (%)
    figures = captured(monkeypatch, plots)
    plots.sensitivity_figure(runs, "num_codes", Path("unused.png"))
    (sensitivity,) = figures
    ranges = {
        "probe MLP (%)": (0, 100),
        "probe linear (%)": (0, 100),
        "SSIM": (-1, 1),
        "codebook usage (%)": (0, 100),
        "codebook perplexity": (0, np.inf),
    }
    seen = set()
    for ax in sensitivity.axes:
        low, high = ranges[ax.get_ylabel()]
        seen.add(ax.get_ylabel())
        for collection in ax.collections:
            for path in collection.get_paths():
                ys = path.vertices[:, 1]
                assert (ys >= low - 1e-9).all() and (ys <= high + 1e-9).all(), (ax.get_ylabel(), ys)
        for patch in ax.patches:  # reference bands (axhspan)
            ys = patch.get_path().transformed(patch.get_patch_transform()).vertices[:, 1] if hasattr(patch, "get_patch_transform") else []
            assert all(low - 1e-9 <= y <= high + 1e-9 for y in ys)
    assert {"SSIM", "codebook perplexity", "probe MLP (%)"} <= seen
    perplexity = next(ax for ax in sensitivity.axes if ax.get_ylabel() == "codebook perplexity")
    assert perplexity.get_ylim()[0] >= 0 and any("band cut at the top edge" in t.get_text() for t in perplexity.texts)  # clipped, marked


def test_the_report_states_the_interval_rule_once_and_that_differences_are_not_bounded(tmp_path):
    out = tmp_path / "report"
    assert report_main(["--runs", str(REPO / "results" / "paper-repro" / "runs-mnist-none.csv"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.count("## Intervals") == 1
    rule = text.split("## Intervals", 1)[1].split("\n## ", 1)[0]
    assert "logit" in rule and "[0, 1]" in rule and "[-1, 1]" in rule and "perplexity" in rule
    assert "not bounded" in rule and "differences" in rule


# --- 2: every ± and every band named with its statistic and n ---------------------------------------


def test_every_plus_minus_and_band_names_its_statistic_and_n(monkeypatch, tmp_path):
    runs = two_seed_runs(dataset="mnist")
    header = tables.table1_markdown(tables.table1(runs)).splitlines()[0]
    for title in ("probe MLP (%)", "SSIM", "MSE"):
        assert f"{title} mean ± 95% t, n seeds" in header
    figures = captured(monkeypatch, frontier)
    frontier.frontier_figure(runs, Path("unused.png"))
    figures += captured(monkeypatch, plots)
    plots.sensitivity_figure(runs, "num_codes", Path("unused.png"))
    for fig in figures:
        title = re.sub(r"\s+", " ", fig.get_suptitle())
        assert "95% t" in title and re.search(r"n = \d+(-\d+)? seeds? per point", title), title
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        for text in legend:
            if "raw pixels" in text or "KL weight 0.01" in text or "along" in text:
                assert re.search(r"n = \d+", text), text
    out = tmp_path / "report"
    assert report_main(["--runs", str(REPO / "results" / "paper-repro" / "runs-mnist-none.csv"), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    for line in text.splitlines():
        if line.startswith("|") and "±" in line and "---" not in line:  # a table row with ±: its header names the statistic
            table_start = text.rfind("\n\n", 0, text.index(line))
            table_header = text[table_start:].strip().splitlines()[0]
            assert "mean ± 95% t" in table_header or "| margin |" in re.sub(" +", " ", table_header), (line, table_header)


# --- 3: a report rebuilt from a committed CSV into an empty folder is whole -----------------------------


@pytest.mark.parametrize("folder, csvs", [("paper-repro", ["runs-mnist-none.csv"])])
def test_a_report_from_a_committed_csv_into_an_empty_folder_has_every_figure(tmp_path, folder, csvs):
    results = REPO / "results" / folder
    out = tmp_path / "new"
    assert (
        report_main(["--runs", *[str(results / c) for c in csvs], "--out", str(out), "--plan", str(REPO / "analysis/plans/paper.toml")])
        == 0
    )
    text = (out / "report.md").read_text()
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(referenced) >= 5  # ssim_vs_probe and each model's reconstructions and t-SNE
    for path in referenced:
        assert (out / path).is_file(), path
    assert "Absent figures" not in text
    for name in ("vae_mnist_none_tsne.png", "vqvae_mnist_none_reconstructions.png"):  # carried from the CSV's folder, byte for byte
        assert (out / "figures" / name).read_bytes() == (results / "figures" / name).read_bytes()
    assert text == (results / "report.md").read_text()  # the same report as the committed one


def test_a_report_from_a_csv_without_its_figures_names_each_absent_figure_once(tmp_path):
    csv = tmp_path / "alone" / "runs.csv"
    csv.parent.mkdir()
    csv.write_bytes((REPO / "results" / "paper-repro" / "runs-mnist-none.csv").read_bytes())
    out = tmp_path / "new"
    assert report_main(["--runs", str(csv), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.count("**Absent figures (4):**") == 1 and text.count("a runs CSV carries no artifacts") == 1
    assert "tsne.png of run `b4a2c9ef2d524409981df34214fb1f5e`" in text
    for path in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        assert (out / path).is_file(), path


# --- 4: labels that do not collide; titles naming the dataset and the probe ---------------------------


def test_frontier_labels_do_not_overlap_and_titles_name_the_dataset_and_the_probe(monkeypatch):
    runs = two_seed_runs(dataset="CIFAR-10-images")
    figures = captured(monkeypatch, frontier)
    frontier.frontier_figure(runs, Path("unused.png"))
    (fig,) = figures
    renderer = fig.canvas.get_renderer()
    labels = [a for ax in fig.axes for a in ax.texts if isinstance(a, Annotation)]
    assert sorted(a.get_text() for a in labels) == sorted(["K=16", "K=64", "K=256", "K=2048", "KL 0.01", "KL 0.1"])
    boxes = [Text.get_window_extent(a, renderer) for a in labels]  # the text's own extent (a moved label's leader line apart)
    for (a, box_a), (b, box_b) in itertools.combinations(zip(labels, boxes), 2):
        assert not box_a.overlaps(box_b), (a.get_text(), b.get_text())
    (ax,) = fig.axes
    assert "CIFAR-10 (JPEG copy)" in ax.get_title() and "MLP probe" in ax.get_title()
    assert "MLP-probe" in ax.get_ylabel() and "SSIM" in ax.get_xlabel()


def test_every_figure_title_names_the_dataset_by_its_own_name_and_the_probe(monkeypatch):
    runs = two_seed_runs(dataset="CIFAR-10-images")
    figures = captured(monkeypatch, plots)
    plots.sensitivity_figure(runs, "num_codes", Path("unused.png"))
    plots.ssim_vs_probe_figure(runs, Path("unused.png"))
    for fig in figures:
        for ax in fig.axes:
            assert ax.get_title().startswith("CIFAR-10 (JPEG copy)"), ax.get_title()
            assert "probe" in (ax.get_title() + ax.get_ylabel() + ax.get_xlabel()).lower() or ax.get_ylabel().startswith(
                ("SSIM", "codebook")
            )
    ssim_vs_probe = figures[-1].axes[0]
    assert "MLP probe" in ssim_vs_probe.get_title() and "MLP-probe" in ssim_vs_probe.get_xlabel()
