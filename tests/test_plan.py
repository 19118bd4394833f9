"""The pre-registered plan: loading and validation, one declared family, TOST, minimum n, pooling and registration.

Runs are written to a real SQLite MLflow store the way the sweep writes them (`tests.test_analysis.Store`).
"""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis import claims, knobs, load_runs
from analysis.plan import DEFAULT_PLAN, PRIMARY, PlanError, deviations
from analysis.plan_file import load_plan
from analysis.report import main as report_main
from analysis.runs_csv import read_runs_csv, write_runs_csv
from analysis.verdicts import (
    CONTRADICTED,
    EQUIVALENT,
    NO_VERDICT,
    NOT_RESOLVED,
    SUPPORTED,
    decide,
    holm,
    holm_family,
    paired_test,
    tost_p,
    with_tost,
)
from benchmark.config import ConfigError
from benchmark.sweep import cli
from benchmark.sweep import plan as sweep_plan
from tests.test_analysis import Store, metrics_for

PLAN = load_plan(DEFAULT_PLAN)
MLP = "probe/latent/mlp_acc"


# --- the plan file -----------------------------------------------------------------------


def test_the_paper_plan_declares_its_endpoints_families_and_rules():
    assert PLAN.name == "paper" and len(PLAN.sha256) == 64 and PLAN.min_n == 5
    assert PLAN.primary_metric() == MLP and PLAN.label_embedding == "none"
    assert {e.claim for e in PLAN.endpoints} == {1, 2, 3, 4}
    # the colour half of claims 2 and 3 on the JPEG copy of CIFAR-10, CIFAR-100 kept; claim 4 on NMI with thresholds
    assert {e.dataset for e in PLAN.endpoints if e.claim in (2, 3)} >= {"cifar100", "CIFAR-10-images"}
    assert all(e.metric == "cluster/latent/ari" and e.threshold in PLAN.thresholds for e in PLAN.endpoints if e.claim == 4)
    assert all(m.why for m in PLAN.margins.values()) and PLAN.margin(MLP) == 0.005
    assert set(PLAN.pooling) == {"precision", "probe_protocol", "code_version"}
    assert knobs.declared_size(PLAN) == 16  # KL 4 + 4, VQ axes 3 + 3 + 2 (the centre is MNIST's KL 0.01)


def _write_plan(tmp_path: Path, edit) -> Path:
    text = DEFAULT_PLAN.read_text()
    path = tmp_path / "plan.toml"
    path.write_text(edit(text))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('name = "paper"', ""), "lacks `name`"),
        (lambda t: t.replace("min_n = 5", "min_n = 1"), "min_n = 1"),
        (lambda t: t.replace("\nexpect = -1", "\nexpect = 2", 1), "expect = 2"),
        (lambda t: t.replace('\ncompare = "level"', '\ncompare = "levels"', 1), "compare = 'levels'"),
        (lambda t: t.replace('threshold = "well"', 'threshold = "great"', 1), "threshold 'great'"),
        (lambda t: t + "\nsurprise = 1\n", "unknown key(s) surprise"),
        (lambda t: t.replace("value = 0.005", "value = 5"), "[margins.accuracy].value = 5.0"),
        (lambda t: t.replace('refuse = ["precision"', 'refuse = ["colour"'), "[pooling].refuse names 'colour'"),
        (lambda t: t.replace('id = "3-mnist"', 'id = "1-mnist"'), "endpoint ids repeat (1-mnist)"),
        (lambda t: t.replace("[families.sensitivity]", "[families.other]"), "lacks `sensitivity`"),
        (lambda t: t + "\n[[[\n", "not valid TOML"),
    ],
)
def test_a_bad_plan_is_refused_with_exit_2_and_a_clear_message(tmp_path, capsys, edit, message):
    path = _write_plan(tmp_path, edit)
    with pytest.raises(PlanError, match=re.escape(message)):
        load_plan(path)
    csv = Path(__file__).parents[1] / "results" / "paper-repro" / "runs-mnist-none.csv"
    assert report_main(["--runs", str(csv), "--plan", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plan ") and message in err
    assert not (tmp_path / "out").exists()


def test_a_missing_plan_is_refused(tmp_path, capsys):
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(tmp_path / "nope.toml")


# --- the rule ---------------------------------------------------------------------------


def test_tost_matches_a_hand_computation_and_the_90_percent_interval():
    d = np.array([0.0011, 0.0032, 0.0004, 0.0025, 0.0019])
    test = with_tost(paired_test(np.zeros(5), d), 0.005)
    mean, se = d.mean(), d.std(ddof=1) / math.sqrt(5)
    by_hand = max(1 - stats.t.cdf((mean + 0.005) / se, 4), stats.t.cdf((mean - 0.005) / se, 4))
    assert math.isclose(test.p_tost, by_hand, rel_tol=1e-9)
    # p < 0.05 exactly when the 90% interval lies inside the margin
    half90 = stats.t.ppf(0.95, 4) * se
    for margin in (0.0025, 0.003, 0.0035, 0.004, 0.005):
        inside = -margin < mean - half90 and mean + half90 < margin
        assert (tost_p(mean, se, 4, margin) < 0.05) == inside, margin


def test_a_comparison_can_be_both_different_and_within_the_margin():
    d = np.array([0.0011, 0.0032, 0.0004, 0.0025, 0.0019, 0.0021])  # clearly above 0, clearly inside ±0.005
    test = holm_family([with_tost(paired_test(np.zeros(6), d), 0.005)], declared=1)[0]
    verdict, reason = decide(test, expect=1, margin=0.005, min_n=5)
    assert verdict == f"{SUPPORTED}; {EQUIVALENT}" and "both" not in verdict and "within the margin" in reason
    assert decide(test, expect=-1, margin=0.005, min_n=5)[0] == f"{CONTRADICTED}; {EQUIVALENT}"
    # the same differences against a tighter margin: different only
    tight = holm_family([with_tost(paired_test(np.zeros(6), d), 0.001)], declared=1)[0]
    assert decide(tight, expect=1, margin=0.001, min_n=5)[0] == SUPPORTED


def test_no_verdict_below_the_minimum_n():
    test = holm_family([with_tost(paired_test(np.zeros(3), np.array([-0.03, -0.031, -0.029])), 0.005)], 1)[0]
    assert test.p_holm < 0.05  # decisive numbers, too few seeds
    assert decide(test, expect=-1, margin=0.005, min_n=5) == (NO_VERDICT, "n = 3 < 5")


def test_the_declared_family_counts_untested_endpoints_and_both_hypotheses():
    a = with_tost(paired_test(np.zeros(5), np.array([0.01, 0.012, 0.011, 0.009, 0.0105])), 0.005)
    alone = holm_family([a], declared=1)[0]
    in_family = holm_family([a], declared=11)[0]
    assert math.isclose(in_family.p_holm, min(1.0, 22 * a.p))  # smallest of 22 hypotheses
    assert math.isclose(alone.p_holm, holm([a.p, a.p_tost])[0])
    assert in_family.p_holm > alone.p_holm


# --- one family whatever runs are passed ------------------------------------------------------


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """MNIST: 5 seeds of the paper point (VAE, VQ-VAE) and 3-seed KL and K axes; Fashion-MNIST: a 5-seed paper point;
    fp32 everywhere, and an extra bf16 copy of the MNIST centre in its own experiment (for pooling)."""
    s = Store(tmp_path_factory.mktemp("plan"))
    experiment, parent = s.sweep("planned", "sensitivity")
    vae = (0.970, 0.972, 0.969, 0.971, 0.973)
    vq = (0.9735, 0.9738, 0.9741, 0.9733, 0.9752)
    for seed in range(5):
        for model, mlp in (("vae", vae[seed]), ("vqvae", vq[seed])):
            s.trial(
                experiment,
                parent,
                metrics_for(mlp, 0.95 if model == "vae" else 0.85 + 0.002 * seed, model, seed),
                model=model,
                dataset="mnist",
                seed=seed,
                artifacts=(),
            )
            s.trial(
                experiment, parent, metrics_for(mlp - 0.1, 0.9, model, seed), model=model, dataset="fashion_mnist", seed=seed, artifacts=()
            )
    for seed in range(3):
        for kl, mlp in ((0.1, (0.980, 0.970, 0.990)), (1.0, (0.985, 0.975, 0.995))):  # noisy: the centre has the smallest p
            s.trial(
                experiment,
                parent,
                metrics_for(mlp[seed], 0.9, "vae", seed),
                model="vae",
                dataset="mnist",
                seed=seed,
                kl_weight=kl,
                artifacts=(),
            )
        s.trial(
            experiment,
            parent,
            metrics_for((0.962, 0.975, 0.955)[seed], 0.85, "vqvae", seed),
            model="vqvae",
            dataset="mnist",
            seed=seed,
            num_codes=32,
            artifacts=(),
        )
    pooled, pooled_parent = s.sweep("pooled", "paper")
    for seed in range(5):
        for model, mlp in (("vae", vae[seed]), ("vqvae", vq[seed])):
            for precision in ("fp32", "bf16"):
                s.trial(
                    pooled,
                    pooled_parent,
                    metrics_for(mlp, 0.9, model, seed),
                    model=model,
                    dataset="mnist",
                    seed=seed,
                    precision=precision,
                    artifacts=(),
                )
    s.runs = load_runs("planned", tracking_uri=s.uri)
    return s


def test_the_primary_family_does_not_depend_on_which_runs_are_passed(planned):
    runs = planned.runs
    everything = claims.claims(runs, PLAN)
    mnist_only = claims.claims(runs[runs["dataset"] == "mnist"], PLAN)
    no_axes = claims.claims(runs[runs["kl_weight"].isna() | np.isclose(runs["kl_weight"].astype(float), 0.01)], PLAN)

    def pick(table):
        return table[(table["family"] == PRIMARY) & (table["id"] == "1-mnist")].iloc[0]

    row = pick(everything)
    assert row["n"] == 5 and row["p"] < 0.05
    assert pick(mnist_only)["p_holm"] == row["p_holm"] == pick(no_axes)["p_holm"]
    # the family is the plan's 11 endpoints (22 hypotheses), not what this table holds
    assert math.isclose(row["p_holm"], min(1.0, 22 * row["p"])) or row["p_holm"] >= row["p"] * 2


def test_per_table_families_disagree_and_the_plans_single_family_decides(planned):
    """The centre comparison is in the KL table and the VQ table: Holm within each table gives it two adjusted p
    (so two verdicts could follow); the plan's one sensitivity family gives it one, in both tables."""
    kl, vq = knobs.sensitivity(planned.runs, PLAN)
    centre_kl = kl[(kl["dataset"] == "mnist") & np.isclose(kl["kl_weight"], 0.01)].iloc[0]
    centre_vq = vq[(vq["dataset"] == "mnist") & (vq["knob"] == "centre")].iloc[0]
    mnist_kl = kl[kl["dataset"] == "mnist"]
    per_kl_table = holm(list(mnist_kl["p"]))[list(mnist_kl["kl_weight"]).index(0.01)]
    per_vq_table = holm(list(vq["p"]))[list(vq["knob"]).index("centre")]
    assert not math.isclose(per_kl_table, per_vq_table)  # today's per-table families disagree
    assert centre_kl["p_holm"] == centre_vq["p_holm"] and centre_kl["verdict"] == centre_vq["verdict"]
    assert centre_kl["p_holm"] >= max(per_kl_table, per_vq_table)  # 16 declared tests, both hypotheses
    assert centre_kl["verdict"] in (NOT_RESOLVED, SUPPORTED, CONTRADICTED, EQUIVALENT) or centre_kl["verdict"].endswith(EQUIVALENT)
    # three-seed rows are shown, with no verdict
    three = kl[(kl["dataset"] == "mnist") & np.isclose(kl["kl_weight"], 1.0)].iloc[0]
    assert three["n"] == 3 and three["verdict"] == NO_VERDICT and three["reason"] == "n = 3 < 5"


def test_the_report_gives_sign_flip_p_in_every_verdict_table_and_no_verdict_below_min_n(planned, tmp_path):
    assert report_main(["--experiment", "planned", "--tracking-uri", planned.uri, "--out", str(tmp_path)]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "no verdict: n = 3 < 5" in text
    tables_with_verdicts = [
        block
        for block in text.split("\n\n")
        if block.startswith("|") and ("verdict" in block.split("\n")[0] or "claim 1" in block.split("\n")[0])
    ]
    assert len(tables_with_verdicts) >= 4  # primary, secondary, KL, VQ
    assert all("sign-flip p" in block.split("\n")[0] for block in tables_with_verdicts)
    assert "Analysis plan: `paper`" in text and PLAN.short_hash in text
    assert "**primary** (11 declared tests)" in text and "**sensitivity** (16 declared tests)" in text
    assert "**secondary** (24 declared tests)" in text  # 3 probe endpoints x 4 metrics + 3 datasets x 2 comparators x 2
    assert "**matched_rate** (12 declared tests)" in text  # 6 quantizer arms x 2 datasets, listed because the plan declares it
    assert "registered under no plan" in text  # these runs were not registered
    assert "seed-only: no per-image predictions" in text


# --- pooling ------------------------------------------------------------------------------


def test_pooled_precisions_are_refused_and_flagged_with_allow_pooling(planned, tmp_path, capsys):
    args = ["--experiment", "pooled", "--tracking-uri", planned.uri]
    assert report_main([*args, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "refuses to pool" in err and "precision differs within one cell" in err and "bf16" in err and "fp32" in err
    run_id = load_runs("pooled", tracking_uri=planned.uri)["run_id"].iloc[0]
    assert run_id in err  # names the runs
    assert not (tmp_path / "refused").exists()
    assert report_main([*args, "--allow-pooling", "--out", str(tmp_path / "allowed")]) == 0
    text = (tmp_path / "allowed" / "report.md").read_text()
    assert "Pooled with --allow-pooling" in text and "precision differs" in text


def test_a_different_probe_protocol_or_code_version_is_refused_too(planned, tmp_path, capsys):
    runs = planned.runs[planned.runs["dataset"] == "fashion_mnist"].copy()
    for change, word in (
        (lambda r: r.assign(**{"probe.protocol": ["v1"] * (len(r) - 1) + ["v2"]}), "probe protocol"),
        (lambda r: r.assign(git_commit=["aaa"] * (len(r) - 1) + ["bbb"]), "code version"),
    ):
        path = tmp_path / f"{word.replace(' ', '-')}.csv"
        write_runs_csv(change(runs), path)
        assert report_main(["--runs", str(path), "--out", str(tmp_path / "o")]) == 2
        assert f"{word}" in capsys.readouterr().err


def test_a_runs_csv_accepts_any_dataset_name_and_lists_dataset_tags(planned, tmp_path):
    runs = planned.runs[planned.runs["dataset"] == "fashion_mnist"].copy()
    runs["dataset"] = "CIFAR-10-images"
    runs["dataset.hash"] = "0123456789"  # all digits: stays text
    runs["dataset.note"] = "JPEG (quality 75) copy of CIFAR-10"
    runs["dataset.classes"] = 10
    path = tmp_path / "jpeg.csv"
    write_runs_csv(runs, path)
    back = read_runs_csv([path])
    assert back["dataset.hash"].iloc[0] == "0123456789" and set(back["dataset"]) == {"CIFAR-10-images"}
    assert report_main(["--runs", str(path), "--out", str(tmp_path / "o")]) == 0
    text = (tmp_path / "o" / "report.md").read_text()
    assert "`CIFAR-10-images` (CIFAR-10 (JPEG copy)), hash `0123456789`, 10 classes: JPEG (quality 75) copy of CIFAR-10" in text
    assert "CIFAR-10 (JPEG copy)" in text.split("## The paper's claims")[1]


# --- registration -----------------------------------------------------------------------------


def _registered(store: Store, name: str, plan_path: Path) -> None:
    """A sweep's parent and trials tagged exactly as `benchmark.sweep` tags them from --plan."""
    tags, _ = sweep_plan.read_plan(str(plan_path))
    experiment = store.client.create_experiment(name, artifact_location=str(store.root / "artifacts" / name))
    parent = store.client.create_run(experiment, run_name=f"sweep-{name}", tags={"vqbench.role": "sweep", **tags}).info.run_id
    for seed in range(5):
        for model, mlp in (("vae", 0.97 + 0.001 * seed), ("vqvae", 0.972 + 0.0012 * seed)):
            store.trial(
                experiment,
                parent,
                metrics_for(mlp, 0.9, model, seed),
                model=model,
                dataset="mnist",
                seed=seed,
                artifacts=(),
                extra_tags=tags if model == "vae" else None,
            )  # the VQ-VAE trials inherit the parent's registration
    store.client.set_terminated(parent, "FINISHED")


def test_sweep_read_plan_and_its_errors(tmp_path):
    tags, text = sweep_plan.read_plan(str(DEFAULT_PLAN))
    assert tags == {"vqbench.plan": "paper", "vqbench.plan_hash": PLAN.sha256} and text == DEFAULT_PLAN.read_text()
    (tmp_path / "bad.toml").write_text("[[[")
    with pytest.raises(ConfigError, match="not a TOML plan"):
        sweep_plan.read_plan(str(tmp_path / "bad.toml"))
    with pytest.raises(ConfigError, match="cannot read it"):
        sweep_plan.read_plan(str(tmp_path / "none.toml"))
    assert cli.main(["--plan", str(tmp_path / "none.toml"), "--dry-run"]) == 2


def test_the_registered_plan_is_read_back_and_an_edit_after_registration_is_flagged(planned, tmp_path):
    plan_path = tmp_path / "paper.toml"
    shutil.copyfile(DEFAULT_PLAN, plan_path)
    _registered(planned, "registered", plan_path)
    runs = load_runs("registered", tracking_uri=planned.uri)
    assert set(runs["plan"]) == {"paper"} and set(runs["plan_hash"]) == {PLAN.sha256}
    assert deviations(load_plan(plan_path), runs) == []
    out = tmp_path / "same"
    assert report_main(["--experiment", "registered", "--tracking-uri", planned.uri, "--plan", str(plan_path), "--out", str(out)]) == 0
    assert "Deviation from the plan" not in (out / "report.md").read_text()
    # the exported CSV carries the registration
    csv = tmp_path / "registered.csv"
    write_runs_csv(runs, csv)
    assert set(read_runs_csv([csv])["plan_hash"]) == {PLAN.sha256}
    # edited after registration
    plan_path.write_text(plan_path.read_text().replace("value = 0.005", "value = 0.01"))
    out = tmp_path / "edited"
    assert report_main(["--runs", str(csv), "--plan", str(plan_path), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert f"the plan `paper` was edited after 10 run(s) were registered under it (registered `{PLAN.short_hash}`" in text
    # another plan, and margins overridden on the command line
    other = _write_plan(tmp_path, lambda t: t.replace('name = "paper"', 'name = "mine"'))
    out = tmp_path / "other"
    assert report_main(["--runs", str(csv), "--plan", str(other), "--accuracy-margin", "1", "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert (
        "registered under another plan, `paper`" in text
        and "accuracy margin was overridden on the command line: ±0.01 instead of the plan's declared ±0.005" in text
    )


@pytest.mark.slow
def test_a_real_sweep_registers_the_plan_on_its_parent_and_trials_and_its_report_reads_it(tmp_path, local_ray):
    plan_path = tmp_path / "paper.toml"
    shutil.copyfile(DEFAULT_PLAN, plan_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        [
            "--space",
            "smoke",
            "--tracking-uri",
            uri,
            "--storage-path",
            str(tmp_path / "ray"),
            "--experiment",
            "t",
            "--name",
            "s",
            "--epochs",
            "1",
            "--plan",
            str(plan_path),
            "--no-log-model",
        ]
    )
    assert rc == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t").experiment_id
    parent = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")[0]
    assert parent.data.tags["vqbench.plan"] == "paper" and parent.data.tags["vqbench.plan_hash"] == PLAN.sha256
    assert parent.data.params["plan"] == str(plan_path)
    for run in client.search_runs([experiment], "tags.`vqbench.role` = 'trial'"):
        assert run.data.tags["vqbench.plan_hash"] == PLAN.sha256
    assert report_main(["--experiment", "t", "--tracking-uri", uri, "--plan", str(plan_path), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert f"SHA-256 `{PLAN.short_hash}`" in text and "Deviation from the plan" not in text
    plan_path.write_text(plan_path.read_text() + "\n# edited\n")
    assert report_main(["--experiment", "t", "--tracking-uri", uri, "--plan", str(plan_path), "--out", str(tmp_path / "r2")]) == 0
    assert "was edited after 2 run(s) were registered" in (tmp_path / "r2" / "report.md").read_text()


def test_the_sweep_registers_the_plan_on_its_parent_and_trials_without_training(tmp_path, monkeypatch, capsys):
    """benchmark.sweep.cli.main end to end with Ray Tune's fit replaced: the real parent run, the real param space
    (`tuner_for`), and trial runs opened with the tags the trainable gets from it, as `tune_trial` opens them."""
    import sys
    import types

    from mlflow.tracking import MlflowClient

    from benchmark.config import TrialConfig
    from benchmark.sweep import runner
    from benchmark.tracking.runs import TrialRun
    from benchmark.tracking.store import TrackingTarget

    fake = types.ModuleType("benchmark.sweep.trainable")
    fake.tune_trial = lambda params: None
    monkeypatch.setitem(sys.modules, "benchmark.sweep.trainable", fake)
    monkeypatch.setattr(runner, "connect_ray", lambda args, worker_env=None: False)

    def fit(tuner):  # what each trial of the grid does with its params (benchmark.sweep.trainable), minus the training
        space = tuner._local_tuner._param_space
        for trial in space["trial"]["grid_search"]:
            config = TrialConfig.from_dict(trial)
            run = TrialRun.open(TrackingTarget(**space["tracking"]), config, "cpu", tags=dict(space["study_tags"]))
            run.finish({"probe/latent/mlp_acc": 0.9}, config.epochs, [], config)
        return [], False

    import benchmark.sweep.interrupt

    monkeypatch.setattr(benchmark.sweep.interrupt, "fit_watching_interrupts", fit)
    plan_path = tmp_path / "paper.toml"
    shutil.copyfile(DEFAULT_PLAN, plan_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rc = cli.main(
        [
            "--space",
            "smoke",
            "--tracking-uri",
            uri,
            "--storage-path",
            str(tmp_path / "ray"),
            "--experiment",
            "t",
            "--name",
            "s",
            "--plan",
            str(plan_path),
        ]
    )
    assert rc == 0, capsys.readouterr()
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("t").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")
    assert parent.data.tags["vqbench.plan"] == "paper" and parent.data.tags["vqbench.plan_hash"] == PLAN.sha256
    assert parent.data.params["plan"] == str(plan_path)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "plan")} == {"plan/paper.toml"}
    trials = client.search_runs([experiment], "tags.`vqbench.role` = 'trial'")
    assert len(trials) == 2 and all(t.data.tags["vqbench.plan_hash"] == PLAN.sha256 for t in trials)
    assert all(t.data.tags["vqbench.study"] == "smoke" for t in trials)  # the study's own tags survive beside the plan's
    assert report_main(["--experiment", "t", "--tracking-uri", uri, "--plan", str(plan_path), "--out", str(tmp_path / "r")]) == 0
    text = (tmp_path / "r" / "report.md").read_text()
    assert f"SHA-256 `{PLAN.short_hash}`" in text and "Deviation from the plan" not in text
    plan_path.write_text(plan_path.read_text() + "\n# edited\n")
    assert report_main(["--experiment", "t", "--tracking-uri", uri, "--plan", str(plan_path), "--out", str(tmp_path / "r2")]) == 0
    assert "was edited after 2 run(s) were registered" in (tmp_path / "r2" / "report.md").read_text()
