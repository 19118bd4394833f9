"""Seed and test-set uncertainty: the two-level bootstrap (seeds, then test images, paired on the same images),
its calibration by simulation, and per-image predictions from a runs CSV's companion file into the report.

The simulation has both variance sources: each test image has a difficulty shared by both models and every
seed, and an image effect on the difference that every seed shares (one test set); each seed shifts the
difference and adds its own per-image noise. The two models are mirror images, so the true difference over
the population of images and seeds is exactly 0.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import claims, load_runs, predictions
from analysis.plan import DEFAULT_PLAN, PRIMARY
from analysis.plan_file import load_plan
from analysis.report import main as report_main
from analysis.runs_csv import write_runs_csv
from analysis.verdicts import SEED_ONLY, SUPPORTED, TWO_LEVEL, decide, holm_family, paired_test, two_level_test, with_tost
from benchmark.result_keys import PREDICTIONS_FILE
from tests.test_analysis import Store, metrics_for

PLAN = load_plan(DEFAULT_PLAN)


def simulate(
    rng: np.random.Generator, seeds: int = 5, images: int = 2000, image_sd: float = 0.35, seed_sd: float = 0.01, noise_sd: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): correctness per seed and test image of two models whose true population difference is 0."""
    difficulty = rng.normal(1.3, 1.0, images)
    image_effect = rng.normal(0.0, image_sd, images)  # shared by every seed: the test set is one sample
    seed_effect = rng.normal(0.0, seed_sd, (seeds, 1))
    a = (difficulty - image_effect - seed_effect + rng.normal(0, noise_sd, (seeds, images)) > 0).astype(float)
    b = (difficulty + image_effect + seed_effect + rng.normal(0, noise_sd, (seeds, images)) > 0).astype(float)
    return a, b


def test_the_two_level_interval_is_wider_by_the_test_set_and_paired_on_the_same_images():
    rng = np.random.default_rng(3)
    a, b = simulate(rng)
    d = b - a
    seed_only = paired_test(a.mean(axis=1), b.mean(axis=1))
    both = two_level_test(d, reps=1000, seed=1)
    assert both.interval == TWO_LEVEL and math.isclose(both.mean, seed_only.mean)
    assert both.high - both.low > seed_only.high - seed_only.low
    assert (both.seed_low, both.seed_high) == pytest.approx((seed_only.low, seed_only.high))
    # no seed-to-seed variation at all: the seed-only interval is a point, the test images still give width
    same = np.tile(d[0], (5, 1))
    assert paired_test(np.zeros(5), same.mean(axis=1)).high == paired_test(np.zeros(5), same.mean(axis=1)).low
    assert two_level_test(same, reps=500).high - two_level_test(same, reps=500).low > 0.005


@pytest.mark.parametrize("seeds", [5, 8])
def test_two_level_calibration_by_simulation(seeds):
    """Coverage of the true difference (0) at nominal 95%: at least 93%; the seed-only interval, which ignores the
    shared test set, falls short. Families of 10 null comparisons: false *supported* (after Holm) in at most 5%."""
    rng = np.random.default_rng(100 + seeds)
    reps = 400
    two_level, seed_only = [], []
    for _ in range(reps):
        a, b = simulate(rng, seeds=seeds)
        base = paired_test(a.mean(axis=1), b.mean(axis=1))
        seed_only.append(base)
        two_level.append(with_tost(two_level_test(b - a, reps=200, seed=int(rng.integers(1 << 30)), seed_only=base), 0.005))
    coverage = np.mean([t.low <= 0 <= t.high for t in two_level])
    naive = np.mean([t.low <= 0 <= t.high for t in seed_only])
    print(f"n = {seeds}: two-level coverage {coverage:.3f}, seed-only {naive:.3f}")
    assert coverage >= 0.93, coverage
    assert naive < coverage and naive < 0.9, naive  # the test set's share of the noise is real here
    families = [holm_family(two_level[i : i + 10], declared=10) for i in range(0, reps, 10)]
    for expect in (-1, 1):
        false = [any(decide(t, expect, 0.005, min_n=5)[0].startswith(SUPPORTED) for t in family) for family in families]
        assert np.mean(false) <= 0.05, (expect, np.mean(false))
        per_test = np.mean([decide(t, expect, 0.005, min_n=5)[0].startswith(SUPPORTED) for family in families for t in family])
        assert per_test <= 0.05


def test_a_true_difference_is_still_found():
    rng = np.random.default_rng(9)
    found = 0
    for _ in range(40):
        a, _ = simulate(rng)
        b = np.maximum(a, rng.random(a.shape) < 0.1)  # b fixes a tenth of a's errors: about 1 point
        test = with_tost(two_level_test(b - a, reps=300, seed=0), 0.005)
        found += decide(holm_family([test], 1)[0], 1, 0.005, min_n=5)[0].startswith(SUPPORTED)
    assert found >= 36


# --- from a runs CSV and its predictions file into the report ---------------------------------------


def test_predictions_beside_a_runs_csv_give_the_two_level_interval_and_rows_without_say_so(tmp_path):
    s = Store(tmp_path / "store")
    experiment, parent = s.sweep("predicted", "paper")
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 10, 1000)
    batch = predictions.Predictions()
    for seed in range(5):
        a, b = simulate(rng, seeds=1, images=1000)
        for model, correct, mlp in (("vae", a[0], 0.970 + 0.001 * seed), ("vqvae", b[0], 0.975 + 0.001 * seed)):
            run_id = s.trial(experiment, parent, metrics_for(mlp, 0.9, model, seed), model=model, dataset="mnist", seed=seed, artifacts=())
            wrong = (labels + 1) % 10
            batch.by_run[run_id] = {
                "labels": labels,
                "latent/mlp": np.where(correct > 0, labels, wrong),
                "latent/linear": labels,
                "pixels/mlp": labels,
            }
    runs = load_runs("predicted", tracking_uri=s.uri)
    csv = tmp_path / "runs-predicted.csv"
    write_runs_csv(runs, csv)
    assert batch.save(predictions.companion(csv)) == 10
    assert (
        predictions.companion(csv).name == "runs-predicted.predictions.npz" and predictions.companion(csv).stat().st_size < 10 * 2**20 / 10
    )
    back = predictions.from_csvs([csv])
    run_id = runs["run_id"].iloc[0]
    assert set(back.by_run[run_id]) == {"labels", "latent/mlp", "latent/linear", "pixels/mlp"}
    assert back.by_run[run_id]["latent/mlp"].dtype == np.int8
    tested = claims.claims(runs, PLAN, back)
    row = tested[(tested["family"] == PRIMARY) & (tested["id"] == "1-mnist")].iloc[0]
    assert row["interval"] == TWO_LEVEL and row["high"] - row["low"] > row["seed_high"] - row["seed_low"]
    ssim = tested[tested["id"] == "3-mnist"].iloc[0]
    assert ssim["interval"] == SEED_ONLY  # SSIM has no per-image record
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    line = next(row for row in text.splitlines() if row.startswith("| 1 ") and "probe/latent/mlp_acc" in row)
    assert "(two-level bootstrap)" in line
    line = next(row for row in text.splitlines() if row.startswith("| 3 ") and "MNIST" in row)
    assert "seed-only: no per-image predictions" in line
    # without the companion file every measured row says it is seed-only
    predictions.companion(csv).unlink()
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "out2")]) == 0
    line = next(
        row for row in (tmp_path / "out2" / "report.md").read_text().splitlines() if row.startswith("| 1 ") and "latent/mlp_acc" in row
    )
    assert "seed-only: no per-image predictions" in line


def test_predictions_logged_as_mlflow_artifacts_are_read_by_the_report_and_exported_beside_the_csv(tmp_path, capsys):
    from analysis.export import main as export_main

    s = Store(tmp_path / "store")
    experiment, parent = s.sweep("artifacts", "paper")
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 10, 800)
    ids = []
    for seed in range(5):
        a, b = simulate(rng, seeds=1, images=800)
        for model, correct in (("vae", a[0]), ("vqvae", b[0])):
            run_id = s.trial(
                experiment,
                parent,
                metrics_for(0.97 + 0.001 * seed + 0.004 * (model == "vqvae"), 0.9, model, seed),
                model=model,
                dataset="mnist",
                seed=seed,
                artifacts=(),
            )
            folder = tmp_path / "staging" / run_id
            folder.mkdir(parents=True)
            np.savez(folder / PREDICTIONS_FILE, labels=labels, **{"latent/mlp": np.where(correct > 0, labels, (labels + 3) % 10)})
            s.client.log_artifact(run_id, str(folder / PREDICTIONS_FILE))
            ids.append(run_id)
    assert report_main(["--experiment", "artifacts", "--tracking-uri", s.uri, "--out", str(tmp_path / "r")]) == 0
    line = next(
        row for row in (tmp_path / "r" / "report.md").read_text().splitlines() if row.startswith("| 1 ") and "latent/mlp_acc" in row
    )
    assert "(two-level bootstrap)" in line
    csv = tmp_path / "runs.csv"
    assert export_main(["--experiment", "artifacts", "--tracking-uri", s.uri, "--out", str(csv)]) == 0
    assert "per-image test predictions of 10 run(s)" in capsys.readouterr().out
    with np.load(predictions.companion(csv)) as data:
        assert set(data.files) == {f"{r}/{k}" for r in ids for k in ("labels", "latent/mlp")}
        assert np.array_equal(data[f"{ids[0]}/labels"], labels)
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "from-csv")]) == 0
    store_text = (tmp_path / "r" / "report.md").read_text().split("## Runs")[1]
    csv_text = (tmp_path / "from-csv" / "report.md").read_text().split("## Runs")[1]

    # the same intervals from the store and from the export; the one line naming the absent per-run figures says what each
    # source was searched for (the store: the runs' artifacts; a CSV: the figures/ folder beside it)
    def without_absent(text):
        return [line for line in text.splitlines() if not line.startswith("**Absent figures")]

    assert without_absent(store_text) == without_absent(csv_text)
