"""Pareto fronts: the computation on constructed cases, and the report's section from a real MLflow store and from its CSV."""

from __future__ import annotations

import re

import numpy as np
import pytest

from analysis.pareto import pareto_mask
from analysis.report import main as report_main
from tests.test_analysis import Store, metrics_for

OBJECTIVES = {"vqbench.objectives": "train_probe/linear_acc:max,train_probe/ssim:max"}
# (MLP accuracy, SSIM) per searched trial; the fronts are marked True.
VAE = {0.01: (0.95, 0.90, True), 0.1: (0.97, 0.80, True), 0.3: (0.96, 0.70, False), 1.0: (0.90, 0.92, True)}
VQ = {16: (0.90, 0.70, True), 64: (0.89, 0.69, False), 256: (0.85, 0.75, True), 1024: (0.85, 0.75, True)}  # a tie: both on it


def test_pareto_mask_on_constructed_cases():
    points = np.array([[1, 1], [2, 0], [0, 2], [0.5, 0.5], [1, 0], [2, 0], [np.nan, 5]])
    # [0.5, 0.5] and [1, 0] are dominated by [1, 1]; the two [2, 0] tie and stay; a NaN row is on no front
    assert pareto_mask(points).tolist() == [True, True, True, False, False, True, False]
    assert pareto_mask(np.array([[0.3, 0.4]])).tolist() == [True]  # a single point is its own front
    assert pareto_mask(np.array([[1.0, 1.0], [1.0, 1.0]])).tolist() == [True, True]  # equal points do not dominate each other
    assert pareto_mask(np.array([[1.0, 2.0], [1.0, 1.0]])).tolist() == [True, False]  # as good in one, worse in the other
    assert pareto_mask(np.empty((0, 2))).tolist() == []
    assert pareto_mask(np.array([[3.0], [1.0], [3.0]])).tolist() == [True, False, True]  # one objective: the maxima


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("pareto"))
    experiment, parent = s.sweep("pareto", "pareto")
    for kl, (mlp, ssim, _) in VAE.items():
        s.trial(
            experiment,
            parent,
            metrics_for(mlp, ssim, "vae", 0),
            model="vae",
            dataset="digits",
            kl_weight=kl,
            artifacts=(),
            extra_tags={**OBJECTIVES, "vqbench.study": "pareto-digits-vae"},
        )
    for k, (mlp, ssim, _) in VQ.items():
        s.trial(
            experiment,
            parent,
            metrics_for(mlp, ssim, "vqvae", 0),
            model="vqvae",
            dataset="digits",
            num_codes=k,
            artifacts=(),
            extra_tags={**OBJECTIVES, "vqbench.study": "pareto-digits-vqvae"},
        )
    # stopped by ASHA (no final evaluation) and failed: on no front, counted
    s.trial(
        experiment,
        parent,
        {"train_probe/linear_acc": 0.99},
        stopped_at=2,
        model="vae",
        dataset="digits",
        kl_weight=0.5,
        artifacts=(),
        extra_tags=OBJECTIVES,
    )
    s.trial(
        experiment,
        parent,
        {},
        status="FAILED",
        error="TrialDiverged: nan",
        model="vqvae",
        dataset="digits",
        num_codes=8,
        artifacts=(),
        extra_tags=OBJECTIVES,
    )
    experiment, parent = s.sweep("fixed", "quick")
    for model in ("vae", "vqvae"):
        s.trial(experiment, parent, metrics_for(0.9, 0.8, model, 0), model=model, dataset="digits", artifacts=())
    return s


def front_rows(text: str) -> list[tuple[str, str]]:
    """(model, SSIM) of each row of the fronts' table."""
    table = text.split("### The fronts' configs", 1)[1].split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table.strip().splitlines()[2:] if line.startswith("|")]
    return [(row[1], row[9]) for row in rows]


def test_report_draws_each_familys_front_from_a_store_and_from_its_csv(store, tmp_path, capsys):
    from analysis.export import main as export_main

    out = tmp_path / "report"
    assert report_main(["--experiment", "pareto", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = re.sub(" +", " ", (out / "report.md").read_text())
    assert "## Pareto fronts of the search" in text and "![Pareto fronts](figures/pareto_fronts.png)" in text
    assert (out / "figures" / "pareto_fronts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = sorted(
        [("VAE", f"{ssim:.3f}") for mlp, ssim, on in VAE.values() if on]
        + [("VQ-VAE", f"{ssim:.3f}") for mlp, ssim, on in VQ.values() if on]
    )
    assert sorted(front_rows(text)) == expected
    assert "10 trial run(s) of searches ranked on train_probe/linear_acc:max,train_probe/ssim:max; 8 finished" in text
    assert "6 of them are on a front" in text and "1 stopped early" in text and "1 FAILED" in text
    csv = tmp_path / "runs.csv"
    assert export_main(["--experiment", "pareto", "--tracking-uri", store.uri, "--out", str(csv)]) == 0
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "from_csv")]) == 0
    rebuilt = re.sub(" +", " ", (tmp_path / "from_csv" / "report.md").read_text())
    section = lambda t: t.split("## Pareto fronts of the search", 1)[1].split("\n## ", 1)[0]  # noqa: E731
    assert section(rebuilt) == section(text)
    assert (tmp_path / "from_csv" / "figures" / "pareto_fronts.png").is_file()


def test_report_skips_the_fronts_when_the_runs_are_not_a_search(store, tmp_path):
    out = tmp_path / "fixed"
    assert report_main(["--experiment", "fixed", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Pareto fronts of the search\n\nSkipped: these runs are not a search" in text
    assert not (out / "figures" / "pareto_fronts.png").exists()
