"""Searches on the per-epoch train-split probe: ASHA stops trials on it, and the `pareto` space's multi-objective study
produces a front. Real Ray, real sqlite MLflow stores, digits; the runs are slow, the refusals fast."""

from __future__ import annotations

import re

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import ExperimentAnalysis

from analysis.report import main as report_main
from benchmark.evaluation.train_probe import LINEAR_ACC, SSIM
from benchmark.sweep import cli
from benchmark.tracking.runs import STOPPED_TAG
from tests.test_reliability import runs_by_config


def history(client: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, metric)}


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--space", "pareto", "--scheduler", "asha"], "ASHA ranks trials on one; use --scheduler fifo"),
        (["--space", "optuna", "--train-probe-every", "2"], "it needs train_probe_every=1, not 2"),
        (["--space", "optuna", "--train-probe-every", "-1"], "train_probe_every=-1 is not allowed: it must be >= 0"),
    ],
)
def test_searches_refuse_what_cannot_rank_their_trials(argv, expected, capsys):
    assert cli.main([*argv, "--datasets", "digits", "--dry-run"]) == 2
    assert expected in capsys.readouterr().err


def test_dry_run_says_what_each_search_ranks_on(capsys):
    assert cli.main(["--space", "pareto", "--datasets", "digits", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"ranked on {LINEAR_ACC} (max) and {SSIM} (max)" in out and out.strip().endswith("40 trials in space 'pareto'")


@pytest.mark.slow
def test_asha_stops_trials_on_the_per_epoch_probe(tmp_path, local_ray, capsys):
    space = tmp_path / "probe_asha.py"
    space.write_text(
        "from ray import tune\nfrom benchmark.space import Study\n"
        "def studies(options):\n"
        "    base = {'model': 'vae', 'dataset': 'digits', 'epochs': 4, 'code_dim': 8}\n"
        "    return [Study('asha', base=base, search={'kl_weight': tune.loguniform(1e-4, 30.0)}, num_samples=6,\n"
        "                  metric='train_probe/linear_acc', mode='max')]\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        [
            "--space",
            str(space),
            "--tracking-uri",
            uri,
            "--experiment",
            "t",
            "--storage-path",
            str(tmp_path / "ray"),
            "--max-concurrent",
            "1",
            "--no-log-model",
        ]
    )
    assert rc == 0, capsys.readouterr().out[-3000:]
    client = MlflowClient(uri)
    runs = sorted((r for rs in runs_by_config(client, "t").values() for r in rs), key=lambda r: r.info.start_time)
    assert len(runs) == 6 and all(r.data.tags["vqbench.objectives"] == f"{LINEAR_ACC}:max" for r in runs)
    stopped = [r for r in runs if STOPPED_TAG in r.data.tags]
    assert stopped and len(stopped) < 6, "ASHA stopped no trial, or every trial"
    at_rung = {}
    for run in runs:  # the probe is logged at every epoch each trial ran
        ran = int(run.data.tags.get(STOPPED_TAG, 4))
        probe = history(client, run.info.run_id, LINEAR_ACC)
        assert sorted(probe) == list(range(1, ran + 1)) and sorted(history(client, run.info.run_id, SSIM)) == list(range(1, ran + 1))
        if run in stopped:  # ASHA's first rung is epoch 2: a trial stopped there was below the earlier trials' probe there
            assert ran == 2 and probe[2] < max(at_rung.values())
        at_rung[run.info.run_id] = probe[2]


@pytest.mark.slow
def test_pareto_space_on_digits_produces_a_front(tmp_path, local_ray, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        [
            "--space",
            "pareto",
            "--datasets",
            "digits",
            "--num-samples",
            "3",
            "--epochs",
            "2",
            "--tracking-uri",
            uri,
            "--experiment",
            "t",
            "--storage-path",
            str(tmp_path / "ray"),
            "--name",
            "p",
            "--no-log-model",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    parent = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("t").experiment_id], "tags.`vqbench.role` = 'sweep'")[
        0
    ]
    assert parent.data.params["studies"] == "pareto-digits-vqvae:fifo:3 samples,pareto-digits-vae:fifo:3 samples"
    for family in ("vqvae", "vae"):  # every trial's last result, which Optuna is told, holds both objectives
        trials = ExperimentAnalysis(str(tmp_path / "ray" / "p" / f"pareto-digits-{family}")).trials
        assert len(trials) == 3
        for trial in trials:
            assert {LINEAR_ACC, SSIM, "recon/ssim", "probe/latent/mlp_acc"} <= set(trial.last_result) and trial.last_result["failed"] == 0
    assert report_main(["--experiment", "t", "--tracking-uri", uri, "--out", str(tmp_path / "report")]) == 0
    text = re.sub(" +", " ", (tmp_path / "report" / "report.md").read_text())
    assert "6 trial run(s) of searches ranked on train_probe/linear_acc:max,train_probe/ssim:max; 6 finished" in text
    assert (tmp_path / "report" / "figures" / "pareto_fronts.png").is_file()
    table = text.split("### The fronts' configs", 1)[1].split("\n## ", 1)[0]
    assert "| digits | VAE |" in table and "| digits | VQ-VAE |" in table
