"""Claims at matched rate (analysis/rates.py), from a constructed MLflow store written as the sweep writes runs."""

from __future__ import annotations

import pytest

from analysis import load_runs, rates
from analysis.plan import DEFAULT_PLAN
from analysis.plan_file import load_plan
from analysis.report import main as report_main
from tests.test_analysis import Store, metrics_for

PLAN = load_plan(DEFAULT_PLAN)
SEEDS = range(5)
NOISE = (0.0, 0.002, -0.001, 0.001, -0.002)  # per seed, so each paired difference has a spread
# arm -> (MLP accuracy, effective rate on the train split, on the test split)
ARMS = {"plain": (0.950, 72.0, 72.5), "fsq": (0.970, 150.0, 149.0)}
# target -> (MLP accuracy, achieved rate on the train split, on the test split). On the test split the target-108 VAE
# sits nearest the plain arm: a matching that read the test split would pick it.
VAES = {48.0: (0.940, 47.0, 47.5), 72.0: (0.970, 71.0, 90.0), 108.0: (0.975, 107.0, 73.0), 162.0: (0.965, 160.0, 161.0)}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("rates"))
    experiment, parent = s.sweep("rates", "quantizers")
    for seed in SEEDS:
        for arm, (mlp, train_rate, test_rate) in ARMS.items():
            metrics = {
                **metrics_for(mlp + NOISE[seed], 0.9, "vqvae", seed),
                "rate/train_effective_bits": train_rate,
                "rate/effective_bits": test_rate,
            }
            s.trial(experiment, parent, metrics, model="vqvae", dataset="mnist", seed=seed, quantizer=arm)
        for target, (mlp, train_rate, test_rate) in VAES.items():
            metrics = {**metrics_for(mlp - NOISE[seed], 0.95, "vae", seed), "rate/train_bits": train_rate, "rate/bits": test_rate}
            s.trial(experiment, parent, metrics, model="vae", dataset="mnist", seed=seed, target_rate=target)
        s.trial(experiment, parent, {**metrics_for(0.97, 0.95, "vae", seed), "rate/bits": 60.0}, model="vae", dataset="mnist", seed=seed)
    return s


def test_each_arm_meets_the_vae_nearest_its_train_split_rate_and_is_decided_in_the_declared_family(store):
    table = rates.matched_rate(load_runs("rates", tracking_uri=store.uri), PLAN).set_index("quantizer")
    assert set(table.index) == {"plain", "fsq"}
    plain, fsq = table.loc["plain"], table.loc["fsq"]
    assert (plain["vae_target"], plain["vae_rate"]) == (72.0, 71.0)  # by the train split; the test split would say 108
    assert (fsq["vae_target"], fsq["vae_rate"]) == (162.0, 160.0)
    assert plain["n"] == 5 and plain["difference"] == pytest.approx(0.950 - 0.970, abs=1e-9)
    assert plain["low"] < plain["difference"] < plain["high"] < 0
    assert plain["verdict"] == "supported"  # MNIST's claim: the VAE better
    assert fsq["difference"] == pytest.approx(0.005, abs=1e-9)
    # one Holm family of every declared dataset x arm (2 x 6), whatever was measured
    assert rates.declared_size(PLAN) == 12 and bool(plain["declared"]) and plain["p_holm"] >= plain["p"]
    assert plain["p_holm"] <= min(1.0, 24 * plain["p"]) + 1e-12  # 2 hypotheses x 12 tests at most


def test_nearest_target_reads_the_ratio_not_the_difference():
    assert rates.nearest_target(72.0, {48.0: 47.0, 108.0: 100.0}) == 108.0  # 100/72 = 1.39 beats 72/47 = 1.53; by bits, 48
    assert rates.nearest_target(72.0, {36.0: 36.0, 144.0: 144.0}) == 36.0  # a tie goes to the lower target


def test_the_report_gains_the_section_and_the_rate_figure(store, tmp_path):
    assert report_main(["--experiment", "rates", "--tracking-uri", store.uri, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "## At matched rate" in text and "Family **matched_rate** (12 declared tests" in text
    assert "72 → 71.0" in text and (tmp_path / "figures" / "rate.png").stat().st_size > 10_000
