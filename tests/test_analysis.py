"""analysis/: a real MLflow sqlite store with runs of known metrics, in the sweep's schema.

One store per session (creating the database costs ~5 s), one experiment per scenario:
  paper   MNIST + Fashion-MNIST, VAE/VQ-VAE, label none/add, 3 seeds, plus a FAILED, a
          RUNNING and a KILLED run whose metrics must not count
  full    MNIST + CIFAR-100, label none, 3 seeds: MNIST differences straddle 0
  grid    VQ-VAE K in {64, 512} and a VAE, 2 seeds (K varies, D and beta do not)
  single  one seed
  search  an Optuna-like space: one seed, a different K, beta and lr in every run
  twice   two sweeps into one experiment
  broken  only failed runs
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis import RunsError, claims, claims_text, knobs_text, leakage, load_runs, selection, tables
from analysis.paper import paper_table, setting_differences
from analysis.plan import DEFAULT_PLAN, Plan
from analysis.plan_file import load_plan
from analysis.report import main as report_main
from analysis.stats import t_interval
from analysis.verdicts import holm
from benchmark.config import TrialConfig
from benchmark.tracking.runs import trial_tags

REPO = Path(__file__).resolve().parents[1]
PLAN = load_plan(DEFAULT_PLAN)
SEEDS = (0, 1, 2)
# MLP-probe accuracy per (dataset, label_embedding, model), by seed.
PAPER_MLP = {
    ("mnist", "none", "vae"): (0.90, 0.91, 0.92),
    ("mnist", "none", "vqvae"): (0.80, 0.82, 0.81),
    ("mnist", "add", "vae"): (0.95, 0.96, 0.97),
    ("mnist", "add", "vqvae"): (0.99, 0.985, 0.995),
    ("fashion_mnist", "none", "vae"): (0.80, 0.81, 0.79),
    ("fashion_mnist", "none", "vqvae"): (0.78, 0.80, 0.77),
    ("fashion_mnist", "add", "vae"): (0.90, 0.91, 0.92),
    ("fashion_mnist", "add", "vqvae"): (0.95, 0.96, 0.97),
}
PAPER_SSIM = {
    ("mnist", "vae"): (0.95, 0.96, 0.97),
    ("mnist", "vqvae"): (0.90, 0.92, 0.91),
    ("fashion_mnist", "vae"): (0.85, 0.86, 0.87),
    ("fashion_mnist", "vqvae"): (0.80, 0.82, 0.81),
}
# full: MNIST differences straddle 0; CIFAR-100 VQ probes better; VQ kNN lower on CIFAR-100.
FULL_MLP = {
    ("mnist", "vae"): (0.90, 0.91, 0.92),
    ("mnist", "vqvae"): (0.91, 0.90, 0.925),
    ("cifar100", "vae"): (0.20, 0.22, 0.21),
    ("cifar100", "vqvae"): (0.30, 0.33, 0.31),
}


# sensitivity: MLP accuracy by seed; the VQ-VAE centre is K=512.
SENSITIVITY_K = {32: (0.90, 0.91, 0.905), 128: (0.94, 0.945, 0.95), 512: (0.960, 0.962, 0.958), 2048: (0.955, 0.95, 0.96)}
SENSITIVITY_KL = {0.001: (0.975, 0.978, 0.976), 0.01: (0.970, 0.972, 0.969), 0.1: (0.960, 0.975, 0.945), 1.0: (0.80, 0.82, 0.81)}


def metrics_for(mlp: float, ssim: float, model: str, seed: int) -> dict[str, float]:
    found = {
        "probe/latent/mlp_acc": mlp,
        "probe/latent/linear_acc": mlp - 0.05,
        "probe/latent/knn_acc": mlp - 0.02,
        "probe/pixels/mlp_acc": 0.97 + 0.001 * seed,
        "probe/pixels/linear_acc": 0.92,
        "probe/pixels/knn_acc": 0.96 + 0.002 * seed,
        "recon/mse": (1 - ssim) / 10,
        "recon/ssim": ssim,
        "recon/psnr": 20 + 10 * ssim,
        "time/train_s": 1.0,
        "time/eval_s": 0.5,
    }
    if model == "vqvae":
        found.update(
            {
                "codebook/usage": 0.5 + 0.1 * seed,
                "codebook/perplexity": 100.0,
                "codebook/dead_codes": 3.0,
                "probe/codes/mlp_acc": mlp - 0.01,
                "probe/codes/linear_acc": mlp - 0.03,
            }
        )
    return found


class Store:
    """Writes runs exactly as the sweep does: a parent per sweep, a child per trial."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.client = MlflowClient(self.uri)
        self.png = root / "tiny.png"
        fig = Figure(figsize=(1, 1))
        fig.add_subplot().imshow(np.arange(16).reshape(4, 4))
        fig.savefig(self.png, dpi=20)

    def sweep(self, name: str, space: str) -> tuple[str, str]:
        experiment = self.client.create_experiment(name, artifact_location=str(self.root / "artifacts" / name))
        parent = self.client.create_run(experiment, run_name=f"sweep-{space}", tags={"vqbench.role": "sweep", "vqbench.space": space})
        self.client.log_batch(parent.info.run_id, params=[Param("space", space), Param("seeds", "3"), Param("epochs", "10")])
        self.client.set_terminated(parent.info.run_id, "FINISHED")
        return experiment, parent.info.run_id

    def trial(
        self,
        experiment: str,
        parent: str,
        metrics: dict[str, float],
        status: str = "FINISHED",
        error: str | None = None,
        artifacts: tuple[str, ...] = ("reconstructions.png", "tsne.png"),
        stopped_at: int | None = None,
        extra_tags: dict[str, str] | None = None,
        **overrides,
    ) -> str:
        config = TrialConfig.from_dict({"epochs": 10, **overrides})
        tags = {**trial_tags(config, parent, "cpu"), "vqbench.git_commit": "abc123"}
        if error:
            tags["vqbench.error"] = error
        if stopped_at is not None:
            tags["vqbench.stopped_at_epoch"] = str(stopped_at)
        tags.update(extra_tags or {})
        run = self.client.create_run(experiment, run_name=f"{config.model}-{config.dataset}-s{config.seed}", tags=tags)
        run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in config.to_dict().items()]
        epochs = [Metric("train/loss", 1.0 / step, 0, step) for step in range(1, 4)]
        final = [Metric(k, float(v), 0, config.epochs) for k, v in metrics.items()]
        self.client.log_batch(run_id, metrics=epochs + final, params=params)
        for name in artifacts:
            target = self.root / "staging" / run_id / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(self.png.read_bytes())
            self.client.log_artifact(run_id, str(target))
        if status != "RUNNING":
            self.client.set_terminated(run_id, status)
        return run_id


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    s = Store(tmp_path_factory.mktemp("mlflow"))
    experiment, parent = s.sweep("paper", "paper")
    for (dataset, label, model), values in PAPER_MLP.items():
        for seed, mlp in zip(SEEDS, values):
            ssim = PAPER_SSIM[(dataset, model)][seed]
            # one representative run lacks its t-SNE: the report must say so, not crash
            artifacts = (
                ("reconstructions.png",)
                if (dataset, label, model, seed) == ("mnist", "none", "vae", 1)
                else ("reconstructions.png", "tsne.png")
            )
            s.trial(
                experiment,
                parent,
                metrics_for(mlp, ssim, model, seed),
                model=model,
                dataset=dataset,
                seed=seed,
                label_embedding=label,
                artifacts=artifacts,
            )
    s.trial(
        experiment,
        parent,
        {"probe/latent/mlp_acc": 0.0},
        status="FAILED",
        error="RuntimeError: loss is nan",
        model="vqvae",
        dataset="mnist",
        seed=3,
        artifacts=(),
    )
    s.trial(experiment, parent, {"probe/latent/mlp_acc": 0.01}, status="RUNNING", model="vae", dataset="mnist", seed=4, artifacts=())
    s.trial(
        experiment,
        parent,
        {},
        status="KILLED",
        error="orphaned: its sweep driver or worker died while it ran",
        model="vqvae",
        dataset="fashion_mnist",
        seed=5,
        artifacts=(),
    )
    # stopped early by ASHA: FINISHED, but without a final evaluation, so it must not enter the tables
    s.trial(experiment, parent, {"probe/latent/mlp_acc": 0.02}, stopped_at=2, model="vae", dataset="mnist", seed=6, artifacts=())
    s.paper = (experiment, parent)

    experiment, parent = s.sweep("full", "paper")
    for (dataset, model), values in FULL_MLP.items():
        for seed, mlp in zip(SEEDS, values):
            knn_shift = -0.25 if (dataset, model) == ("cifar100", "vqvae") else 0.0
            m = metrics_for(mlp, 0.9 if model == "vae" else 0.7 + 0.01 * seed, model, seed)
            m["probe/latent/knn_acc"] += knn_shift
            s.trial(experiment, parent, m, model=model, dataset=dataset, seed=seed, artifacts=())

    experiment, parent = s.sweep("grid", "grid")
    for seed in (0, 1):
        s.trial(experiment, parent, metrics_for(0.9, 0.95, "vae", seed), model="vae", dataset="mnist", seed=seed, artifacts=())
        for k, mlp in ((64, 0.7), (512, 0.8)):
            s.trial(
                experiment,
                parent,
                metrics_for(mlp + 0.01 * seed, 0.9, "vqvae", seed),
                model="vqvae",
                dataset="mnist",
                seed=seed,
                num_codes=k,
                artifacts=(),
            )

    experiment, parent = s.sweep("single", "quick")
    for model, mlp in (("vae", 0.9), ("vqvae", 0.8)):
        s.trial(experiment, parent, metrics_for(mlp, 0.9, model, 0), model=model, dataset="mnist", seed=0, artifacts=())

    experiment, parent = s.sweep("search", "optuna")  # one seed, a distinct K/beta/lr per run
    for i, k in enumerate(range(16, 16 + 13 * 100, 100)):
        s.trial(
            experiment,
            parent,
            metrics_for(0.8 + i / 1000, 0.9, "vqvae", 0),
            model="vqvae",
            dataset="mnist",
            seed=0,
            num_codes=k,
            beta=0.1 + i / 20,
            lr=1e-3 * (1 + i / 10),
            artifacts=(),
        )

    experiment, first = s.sweep("twice", "quick")  # two sweeps into one experiment
    second = s.client.create_run(
        experiment,
        run_name="sweep-again",
        tags={"vqbench.role": "sweep", "vqbench.space": "quick"},
        start_time=s.client.get_run(first).info.start_time + 1000,
    ).info.run_id
    for parent, mlp in ((first, 0.5), (second, 0.9)):
        s.trial(experiment, parent, metrics_for(mlp, 0.9, "vae", 0), model="vae", dataset="mnist", seed=0, artifacts=())
    s.twice = (first, second)

    experiment, parent = s.sweep("sensitivity", "sensitivity")  # K and the KL weight vary; D and beta do not
    for seed in SEEDS:
        for k, mlp in SENSITIVITY_K.items():
            s.trial(
                experiment,
                parent,
                metrics_for(mlp[seed], 0.85 + k / 1e5, "vqvae", seed),
                model="vqvae",
                dataset="mnist",
                seed=seed,
                num_codes=k,
                artifacts=(),
            )
        for kl, mlp in SENSITIVITY_KL.items():
            s.trial(
                experiment,
                parent,
                metrics_for(mlp[seed], 0.97 - kl / 10, "vae", seed),
                model="vae",
                dataset="mnist",
                seed=seed,
                kl_weight=kl,
                artifacts=(),
            )

    experiment, parent = s.sweep("broken", "quick")
    s.trial(experiment, parent, {}, status="FAILED", error="OutOfMemoryError: CUDA", model="vae", dataset="mnist", artifacts=())
    return s


@pytest.fixture(scope="session")
def paper_runs(store):
    return load_runs("paper", tracking_uri=store.uri)


# --- load_runs ---------------------------------------------------------------------------


def test_load_runs_types_and_columns(store, paper_runs):
    runs = paper_runs
    assert len(runs) == 24 + 4
    assert set(runs["status"]) == {"FINISHED", "FAILED", "RUNNING", "KILLED"}
    assert runs["stopped_at_epoch"].notna().sum() == 1
    assert runs["seed"].dtype == "Int64" and runs["code_dim"].dtype == "Int64" and runs["epochs"].dtype == "Int64"
    assert runs["lr"].dtype == "float64" and runs["kl_weight"].dtype == "float64"
    assert runs["batch_norm"].dtype == "boolean" and runs["leaks_label"].dtype == "boolean"
    assert runs["recon/ssim"].dtype == "float64"
    assert set(runs["parent_run_id"]) == {store.paper[1]}
    # K and beta mean nothing for a VAE, the KL weight nothing for a VQ-VAE
    vae, vq = runs[runs["model"] == "vae"], runs[runs["model"] == "vqvae"]
    assert vae["num_codes"].isna().all() and vae["beta"].isna().all() and vae["kl_weight"].notna().all()
    assert (vq["num_codes"] == 512).all() and vq["kl_weight"].isna().all()
    failed = runs[runs["status"] == "FAILED"].iloc[0]
    assert failed["error"] == "RuntimeError: loss is nan" and failed["seed"] == 3
    assert runs.loc[runs["label_embedding"] == "add", "leaks_label"].all()
    row = runs[(runs["status"] == "FINISHED")].iloc[0]
    assert math.isclose(row["train/loss"], 1 / 3)  # the last epoch's value


def test_a_rate_matched_vae_has_a_target_rate_and_no_kl_weight_and_old_csvs_read(paper_runs, tmp_path):
    from analysis.runs_csv import read_runs_csv, write_runs_csv

    write_runs_csv(paper_runs, tmp_path / "all.csv")
    raw = pd.read_csv(tmp_path / "all.csv", dtype=str, keep_default_na=False, na_values=[""])
    matched = raw.index[raw["model"] == "vae"][0]
    raw.loc[matched, ["target_rate", "run_id"]] = ["40", "rate-matched-run"]
    raw.to_csv(tmp_path / "rate.csv", index=False)
    runs = read_runs_csv([tmp_path / "rate.csv"])
    row = runs[runs["run_id"] == "rate-matched-run"].iloc[0]
    assert row["target_rate"] == 40 and row["capacity_weight"] == 100 and pd.isna(row["kl_weight"])
    others = runs[runs["run_id"] != "rate-matched-run"]
    assert others["target_rate"].isna().all() and others["capacity_weight"].isna().all()  # a KL-weight VAE, or a VQ-VAE
    assert others.loc[others["model"] == "vae", "kl_weight"].notna().all()
    # a CSV exported before the rate-matched VAE existed: every VAE in it is a KL-weight VAE
    raw.drop(columns=["target_rate", "capacity_weight"]).drop(index=matched).to_csv(tmp_path / "old.csv", index=False)
    old = read_runs_csv([tmp_path / "old.csv"])
    assert old["target_rate"].isna().all() and old.loc[old["model"] == "vae", "kl_weight"].notna().all()


def test_a_quantizer_arm_is_not_the_paper_vq_vae_and_old_csvs_are_plain(paper_runs, tmp_path):
    """An FSQ (or any library) arm at the paper's K, D and beta is another model: the claims' reference must not pool it."""
    from analysis.runs_csv import read_runs_csv, write_runs_csv

    write_runs_csv(paper_runs, tmp_path / "all.csv")
    raw = pd.read_csv(tmp_path / "all.csv", dtype=str, keep_default_na=False, na_values=[""])
    arm = raw.index[(raw["model"] == "vqvae") & (raw["status"] == "FINISHED")][0]
    raw.loc[arm, ["quantizer", "run_id"]] = ["fsq", "fsq-run"]
    raw.to_csv(tmp_path / "arms.csv", index=False)
    runs = read_runs_csv([tmp_path / "arms.csv"])
    assert runs.loc[runs["run_id"] == "fsq-run", "quantizer"].item() == "fsq"
    assert runs.loc[runs["model"] == "vae", "quantizer"].isna().all()  # a VAE has no quantizer
    reference = selection.reference_runs(selection.finished(runs))
    assert "fsq-run" not in set(reference["run_id"]) and (reference.loc[reference["model"] == "vqvae", "quantizer"] == "plain").all()
    # a CSV exported before the key existed: every VQ-VAE in it had the paper's quantizer
    raw.drop(columns=["quantizer"]).drop(index=arm).to_csv(tmp_path / "old.csv", index=False)
    old = read_runs_csv([tmp_path / "old.csv"])
    assert (old.loc[old["model"] == "vqvae", "quantizer"] == "plain").all()


def test_load_runs_bad_input(store, tmp_path):
    with pytest.raises(RunsError, match="experiment 'nope' not found.*paper"):
        load_runs("nope", tracking_uri=store.uri)
    missing = tmp_path / "absent.db"
    with pytest.raises(RunsError, match="no MLflow store"):
        load_runs("paper", tracking_uri=f"sqlite:///{missing}")
    assert not missing.exists()


# --- statistics ----------------------------------------------------------------------------


def test_t_interval_matches_scipy():
    values = [0.90, 0.91, 0.925, 0.88]
    est = t_interval(values)
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert est.n == 4 and math.isclose(est.mean, np.mean(values))
    assert math.isclose(est.low, low) and math.isclose(est.high, high)
    one = t_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and not one.has_interval


# --- Table 1 -------------------------------------------------------------------------------


def test_table1_values(paper_runs):
    table = tables.table1(paper_runs)
    row = table[(table["model"] == "vqvae") & (table["dataset"] == "mnist") & (table["label_embedding"] == "none")].iloc[0]
    mlp = PAPER_MLP[("mnist", "none", "vqvae")]
    assert row["n"] == 3  # the FAILED seed-3 run (accuracy 0.0) is left out
    assert math.isclose(row["mlp_acc"], np.mean(mlp))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(mlp), scale=stats.sem(mlp))
    assert math.isclose(row["mlp_acc_low"], low) and math.isclose(row["mlp_acc_high"], high)
    assert math.isclose(row["ssim"], np.mean(PAPER_SSIM[("mnist", "vqvae")]))
    assert math.isclose(row["paper_acc"], 0.6960) and math.isclose(row["paper_ssim"], 0.906)
    assert not row["matches_paper"] and row["differs_from_paper"] == "label_embedding=none"
    add = table[(table["model"] == "vqvae") & (table["dataset"] == "mnist") & (table["label_embedding"] == "add")].iloc[0]
    assert add["matches_paper"]
    vae = table[(table["model"] == "vae") & (table["dataset"] == "mnist") & (table["label_embedding"] == "none")].iloc[0]
    assert vae["n"] == 3 and math.isclose(vae["mlp_acc"], 0.91)  # the RUNNING run (0.01) is left out
    pixels = table[(table["model"] == "pixels") & (table["dataset"] == "mnist")].iloc[0]
    assert math.isclose(pixels["mlp_acc"], 0.971) and pixels["n"] == 3
    assert math.isnan(table[(table["model"] == "vae") & (table["dataset"] == "fashion_mnist")]["paper_acc"].iloc[0])
    text = tables.table1_markdown(table)
    assert "81.00 ± " in text and "69.60" in text and "raw pixels" in text and "matches" in text


def test_status_counts(paper_runs):
    counts = selection.status_counts(paper_runs).set_index("status")["runs"].to_dict()
    assert counts == {"FINISHED": 24, "stopped early": 1, "FAILED": 1, "KILLED": 1, "RUNNING": 1}


def test_paper_data():
    table = paper_table()
    assert len(table) == 4 and math.isclose(table["accuracy"].sum(), 0.8005 + 0.6960 + 0.2434 + 0.4013)
    assert (
        setting_differences({"model": "vqvae", "label_embedding": "add", "num_codes": 512, "code_dim": 64, "beta": 0.25, "epochs": 10})
        == []
    )
    assert setting_differences({"model": "vae", "label_embedding": "none", "num_codes": None, "epochs": 3}) == [
        "label_embedding=none",
        "epochs=3",
    ]


# --- claims ---------------------------------------------------------------------------------


def test_model_differences_paired(paper_runs):
    diffs = claims.model_differences(paper_runs)
    row = diffs[(diffs["dataset"] == "mnist") & (diffs["label_embedding"] == "none") & (diffs["metric"] == "probe/latent/mlp_acc")].iloc[0]
    vq, vae = PAPER_MLP[("mnist", "none", "vqvae")], PAPER_MLP[("mnist", "none", "vae")]
    expected = np.subtract(vq, vae)
    assert row["n"] == 3 and math.isclose(row["difference"], expected.mean())
    ref = stats.ttest_rel(vq, vae)
    interval = ref.confidence_interval(0.95)
    assert math.isclose(row["low"], interval.low) and math.isclose(row["high"], interval.high) and math.isclose(row["p"], ref.pvalue)
    assert row["high"] < 0 and math.isclose(row["p_sign_flip"], 0.25)  # all three differences negative: 2/2^3
    assert diffs[diffs["dataset"] == "fashion_mnist"]["stand_in"].all()


def _mini_plan(tmp_path: Path, keep: tuple[str, ...], min_n: int = 3) -> "Plan":
    """The paper plan with only the endpoints `keep` and another minimum n: a plan a user may write."""
    text = DEFAULT_PLAN.read_text().replace("min_n = 5", f"min_n = {min_n}")
    head, *blocks = text.split("[[endpoints]]")
    tail = blocks[-1][blocks[-1].index("# --- the sensitivity") :]
    blocks[-1] = blocks[-1][: blocks[-1].index("# --- the sensitivity")]
    kept = [b for b in blocks if any(f'id = "{k}"' in b for k in keep)]
    path = tmp_path / "mini.toml"
    path.write_text(head + "".join("[[endpoints]]" + b for b in kept) + tail)
    return load_plan(path)


def test_claims_each_way(paper_runs, store, tmp_path):
    tested = claims.claims(paper_runs, PLAN)
    primary = tested[tested["family"] == "primary"].set_index("id")
    assert list(primary.index) == [e.id for e in PLAN.endpoints]  # every declared endpoint, whatever the runs hold
    # Holm across the plan's 11 endpoints x 2 hypotheses: an endpoint without runs counts as p = 1
    made = primary.dropna(subset=["p"])
    assert list(made.index) == ["1-mnist", "3-mnist"] and made["n"].tolist() == [3, 3]
    everything = [*made["p"], *made["p_tost"].fillna(1.0)] + [1.0] * (22 - 4)
    assert np.allclose(made["p_holm"], holm(everything)[:2])
    # three seeds: the numbers are shown, the verdict is not given
    assert primary.loc["1-mnist", "verdict"] == "no verdict" and primary.loc["1-mnist", "reason"] == "n = 3 < 5"
    assert primary.loc["2-cifar100", "reason"] == "no runs on cifar100"
    assert primary.loc["4-mnist-well", "reason"].startswith("no cluster/latent/ari recorded on mnist")
    sentences = claims_text.claim_sentences(tested)
    assert sentences[0].startswith("**Claim 1**: MNIST: VQ-VAE minus VAE probe MLP = -10.00") and "no verdict: n = 3 < 5" in sentences[0]
    assert "not resolved: cifar100: no runs on cifar100" in sentences[1]
    # the label embedding is not the primary setting: `add` runs never enter the primary family
    assert tested["label_embedding"].isna().all() if "label_embedding" in tested else True
    assert math.isclose(
        primary.loc["1-mnist", "difference"],
        np.mean(np.subtract(PAPER_MLP[("mnist", "none", "vqvae")], PAPER_MLP[("mnist", "none", "vae")])),
    )

    # a plan of two endpoints and n >= 3: the same data now decides, Holm over 2 x 2 hypotheses
    mini = _mini_plan(tmp_path, ("1-mnist", "3-mnist"))
    decided = claims.claims(paper_runs, mini)
    primary = decided[decided["family"] == "primary"].set_index("id")
    assert primary.loc["1-mnist", "verdict"] == "supported" and primary.loc["3-mnist", "verdict"] == "supported"

    full = load_runs("full", tracking_uri=store.uri)
    mini = _mini_plan(tmp_path, ("1-mnist", "2-cifar100"))
    indexed = claims.claims(full, mini)
    indexed = indexed[indexed["family"] == "primary"].set_index("id")
    assert indexed.loc["1-mnist", "verdict"] == "not resolved"
    assert indexed.loc["1-mnist", "reason"] == "the interval contains 0 and the TOST does not reject the margin"
    assert indexed.loc["2-cifar100", "verdict"] == "supported"


def test_single_seed_has_no_intervals(store):
    runs = load_runs("single", tracking_uri=store.uri)
    table = tables.table1(runs)
    models = table[table["model"] != "pixels"]
    assert (models["n"] == 1).all() and models["mlp_acc_low"].isna().all()
    assert "±" not in tables.table1_markdown(table)
    tested = claims.claims(runs, PLAN).set_index("id")
    assert tested.loc["1-mnist", "verdict"] == "no verdict" and tested.loc["1-mnist", "reason"] == "n = 1 < 5"


# --- label embedding ------------------------------------------------------------------------


def test_label_embedding_effect(paper_runs):
    effect = leakage.label_embedding_effect(paper_runs)
    row = effect[(effect["model"] == "vqvae") & (effect["dataset"] == "mnist") & (effect["probe"] == "probe/latent/mlp_acc")].iloc[0]
    expected = np.subtract(PAPER_MLP[("mnist", "add", "vqvae")], PAPER_MLP[("mnist", "none", "vqvae")])
    assert math.isclose(row["difference"], expected.mean()) and row["n"] == 3 and row["low"] > 0
    assert math.isclose(row["none"], np.mean(PAPER_MLP[("mnist", "none", "vqvae")]))
    sentences = leakage.leakage_sentences(effect)
    assert any("VQ-VAE on MNIST" in s and "raises" in s and "leak" not in s.split(":")[0] for s in sentences)


# --- report ---------------------------------------------------------------------------------


def test_report_end_to_end(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert report_main(["--experiment", "paper", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = re.sub(" +", " ", (out / "report.md").read_text())  # to_markdown pads cells
    assert "| FAILED | 1 |" in text and "| RUNNING | 1 |" in text and "| KILLED | 1 |" in text
    assert "RuntimeError: loss is nan" in text
    assert "K (codebook size): skipped" in text and "beta (commitment cost): skipped" in text
    assert "**Absent figures (1):** tsne.png of run `" in text and "not among the run's MLflow artifacts" in text  # named once
    assert "not resolved: no runs on cifar100" in text and "stand-in" in text
    pngs = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert "ssim_vs_probe.png" in pngs and "vqvae_mnist_none_tsne.png" in pngs and "vae_mnist_none_reconstructions.png" in pngs
    assert "vae_mnist_none_tsne.png" not in pngs
    for name in pngs:
        assert f"figures/{name}" in text
    logged = {a.path for a in store.client.list_artifacts(store.paper[1], "report")}
    assert {"report/report.md", "report/figures"} <= logged
    figures = {a.path for a in store.client.list_artifacts(store.paper[1], "report/figures")}
    assert {f"report/figures/{name}" for name in pngs} == figures


def test_report_grid_plots_k(store, tmp_path):
    out = tmp_path / "grid"
    assert report_main(["--experiment", "grid", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert (out / "figures" / "sensitivity_num_codes.png").is_file() and "sensitivity_num_codes.png" in text
    assert "D (code dimension): skipped" in text and not (out / "figures" / "sensitivity_code_dim.png").exists()
    table = tables.table1(load_runs("grid", tracking_uri=store.uri))
    vq = table[table["model"] == "vqvae"].set_index("num_codes")
    assert math.isclose(vq.loc[64, "mlp_acc"], 0.705) and math.isclose(vq.loc[512, "mlp_acc"], 0.805)


def test_report_single_seed_says_so(store, tmp_path):
    out = tmp_path / "single"
    assert report_main(["--experiment", "single", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    assert "**Single seed:**" in (out / "report.md").read_text()


def test_report_search_space(store, tmp_path):
    """A random search: one run per value, plotted as points; claims not resolvable, said so."""
    out = tmp_path / "search"
    assert report_main(["--experiment", "search", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert (out / "figures" / "sensitivity_num_codes.png").is_file() and (out / "figures" / "sensitivity_beta.png").is_file()
    assert "**Single seed:**" in text and "no VAE runs on mnist" in text


def test_report_picks_the_latest_sweep_or_the_given_one(store, tmp_path):
    first, second = store.twice
    assert report_main(["--experiment", "twice", "--tracking-uri", store.uri, "--out", str(tmp_path / "a")]) == 0
    text = (tmp_path / "a" / "report.md").read_text()
    assert f"`{second}`" in text and "90.00" in text and "Left out: 1 trial run(s) of other sweeps" in text
    assert report_main(["--experiment", "twice", "--tracking-uri", store.uri, "--out", str(tmp_path / "b"), "--parent-run-id", first]) == 0
    assert "50.00" in (tmp_path / "b" / "report.md").read_text()
    assert {a.path for a in store.client.list_artifacts(first, "report")} >= {"report/report.md"}
    assert report_main(["--experiment", "twice", "--tracking-uri", store.uri, "--out", str(tmp_path / "c"), "--all-sweeps"]) == 0
    assert "70.00" in (tmp_path / "c" / "report.md").read_text()  # both runs, logged to the latest sweep


@pytest.mark.parametrize(
    "args, message",
    [
        (["--experiment", "nope"], "experiment 'nope' not found"),
        (["--experiment", "broken"], "no FINISHED trial runs"),
        (["--experiment", "paper", "--parent-run-id", "0123abc"], "is not a sweep run"),
    ],
)
def test_report_bad_input(store, tmp_path, capsys, args, message):
    out = tmp_path / "out"
    assert report_main([*args, "--tracking-uri", store.uri, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not out.exists()


def test_report_cli_module_missing_store(tmp_path):
    """`python -m analysis.report` itself: exit 2, one message, no database or folder created."""
    store = tmp_path / "none" / "mlflow.db"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "analysis.report",
            "--experiment",
            "paper",
            "--tracking-uri",
            f"sqlite:///{store}",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "no MLflow store" in done.stderr and "--tracking-uri" in done.stderr
    assert not store.exists() and not (tmp_path / "out").exists()


# --- runs CSV --------------------------------------------------------------------------------


def test_report_from_a_store_and_from_its_export_are_identical(store, tmp_path, capsys):
    from analysis.export import main as export_main

    csv = tmp_path / "runs.csv"
    assert export_main(["--experiment", "paper", "--tracking-uri", store.uri, "--out", str(csv)]) == 0
    assert "wrote 28 trial run(s) (24 FINISHED, 1 " in capsys.readouterr().out
    from_store = load_runs("paper", tracking_uri=store.uri)
    from analysis.runs_csv import read_runs_csv

    from_csv = read_runs_csv([csv])
    assert list(from_csv.columns) == list(from_store.columns)
    assert (from_csv.dtypes == from_store.dtypes).all(), from_csv.dtypes[from_csv.dtypes != from_store.dtypes]
    import pandas as pd

    pd.testing.assert_frame_equal(from_csv, from_store)

    out = tmp_path / "report"
    assert report_main(["--experiment", "paper", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    stored = (out / "report.md").read_text()
    assert report_main(["--runs", str(csv), "--out", str(out)]) == 0  # the same folder: its figures are there already
    rebuilt = (out / "report.md").read_text()
    differs = [(a, b) for a, b in zip(stored.splitlines(), rebuilt.splitlines()) if a != b]
    assert len(stored.splitlines()) == len(rebuilt.splitlines())
    # only where the runs were read from, and why the one figure the store never had is absent (each source says what it checked)
    assert [a.split(":")[0] for a, _ in differs] == ["- Read from", "**Absent figures (1)"], differs
    # without the figures beside it, a CSV report says which run's figure is absent and why, once
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "bare")]) == 0
    bare = (tmp_path / "bare" / "report.md").read_text()
    assert bare.count("**Absent figures (") == 1 and "a runs CSV carries no artifacts" in bare


@pytest.mark.parametrize(
    "content, message",
    [
        ("run_id,status\nx,FINISHED\n", "lacks the column(s) experiment, sweep, parent_run_id"),
        ("", "cannot read runs CSV"),
    ],
)
def test_report_from_bad_csv(tmp_path, capsys, content, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()
    assert report_main(["--runs", str(tmp_path / "absent.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "cannot read runs CSV" in capsys.readouterr().err


PUBLISHED_CSV = REPO / "results" / "paper-repro" / "runs-mnist-none.csv"


def _dropped(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    return frame.drop(columns=[column])


def _first_row(column: str, value: str):
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[0, column] = value
        return frame

    return edit


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda f: _dropped(f, "precision"), "lacks the column(s) precision;"),
        (lambda f: _dropped(f, "config_id"), "lacks the column(s) config_id;"),
        (_first_row("model", "foo"), "has model='foo'; allowed: vae, vqvae"),
        (_first_row("dataset", " "), "has an empty dataset name"),
        (_first_row("seed", "abc"), "has seed='abc', not a number"),
        (_first_row("probe/latent/mlp_acc", "abc"), "has probe/latent/mlp_acc='abc', not a number"),
    ],
)
def test_report_refuses_an_edited_runs_csv_before_writing(tmp_path, capsys, edit, message):
    """A published export, damaged as a hand edit would: one message naming the row or column, exit 2, no report folder."""
    csv = tmp_path / "edited.csv"
    edit(pd.read_csv(PUBLISHED_CSV, dtype=str, keep_default_na=False)).to_csv(csv, index=False)
    assert report_main(["--runs", str(csv), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_report_and_export_refuse_an_out_they_cannot_write_before_reading(tmp_path, capsys):
    from analysis.export import main as export_main

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for out in (a_file, a_file / "sub"):
        assert report_main(["--runs", str(PUBLISHED_CSV), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}: {a_file} is a file, not a folder" in err and err.count("\n") == 1, err
    # export checks its --out before it opens the store (there is none here)
    assert export_main(["--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(a_file / "runs.csv")]) == 2
    assert f"{a_file} is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_report_refuses_bad_margins_and_mixed_sources(store, tmp_path, capsys):
    assert report_main(["--experiment", "paper", "--tracking-uri", store.uri, "--accuracy-margin", "-1", "--out", str(tmp_path / "o")]) == 2
    assert "--accuracy-margin" in capsys.readouterr().err
    assert report_main(["--experiment", "paper", "--tracking-uri", store.uri, "--ssim-margin", "1e308", "--out", str(tmp_path / "o")]) == 2
    assert "--ssim-margin 1e+308 is not allowed: pass a number above 0 and below 2" in capsys.readouterr().err
    assert report_main(["--runs", "x.csv", "--tracking-uri", store.uri, "--out", str(tmp_path / "o")]) == 2
    assert "--runs reads CSVs only" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_table1_counts_seeds_not_runs(paper_runs):
    # the same config run twice within a seed: one value per seed, n unchanged
    vq = paper_runs[
        (paper_runs["model"] == "vqvae")
        & (paper_runs["dataset"] == "mnist")
        & (paper_runs["label_embedding"] == "none")
        & (paper_runs["status"] == "FINISHED")
    ]
    repeated = vq[vq["seed"] == 0].assign(run_id="again", **{"probe/latent/mlp_acc": 0.70})
    table = tables.table1(pd_concat(paper_runs, repeated))
    row = table[(table["model"] == "vqvae") & (table["dataset"] == "mnist") & (table["label_embedding"] == "none")].iloc[0]
    mlp = list(PAPER_MLP[("mnist", "none", "vqvae")])
    per_seed = [(mlp[0] + 0.70) / 2, mlp[1], mlp[2]]
    assert row["n"] == 3 and row["mlp_acc_n"] == 3 and math.isclose(row["mlp_acc"], np.mean(per_seed))
    low, high = stats.t.interval(0.95, 2, loc=np.mean(per_seed), scale=stats.sem(per_seed))
    assert math.isclose(row["mlp_acc_low"], low) and math.isclose(row["mlp_acc_high"], high)


def pd_concat(*frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


# --- does the answer depend on the knobs? --------------------------------------------------


def _sensitivity_family(kl: pd.DataFrame, vq: pd.DataFrame) -> list[float]:
    """Holm by hand over the plan's sensitivity family: each declared test once (the centre is KL 0.01), difference
    and TOST p together, the declared tests without runs as p = 1."""
    from analysis import knobs

    tests = pd.concat([kl[["p", "p_tost"]], vq.loc[vq["knob"] != "centre", ["p", "p_tost"]]])
    size = knobs.declared_size(PLAN)
    return holm([*tests["p"], *tests["p_tost"]] + [1.0] * (2 * (size - len(tests))))[: len(tests)]


def test_claim1_at_each_kl_weight(store):
    from analysis import knobs

    runs = load_runs("sensitivity", tracking_uri=store.uri)
    at3 = replace(PLAN, min_n=3)
    table = knobs.kl_verdicts(runs, at3).set_index("kl_weight")
    assert list(table.index) == [0.001, 0.01, 0.1, 1.0] and (table["n"] == 3).all()
    vq = SENSITIVITY_K[512]
    for kl, vae in SENSITIVITY_KL.items():
        ref = stats.ttest_rel(vq, vae)
        assert math.isclose(table.loc[kl, "difference"], np.mean(np.subtract(vq, vae)))
        assert math.isclose(table.loc[kl, "p"], ref.pvalue)
    # one Holm family across both tables (16 declared tests x 2 hypotheses), not across the four weights
    expected = _sensitivity_family(table.reset_index(), knobs.vq_axis_verdicts(runs, at3))
    assert np.allclose(table["p_holm"], expected[:4])
    assert table.loc[0.01, "verdict"] == "supported" and table.loc[1.0, "verdict"] == "contradicted"
    assert table.loc[0.001, "verdict"] == "not resolved"  # p = 0.003 is supported within 4 tests, not within the family
    assert table.loc[0.1, "verdict"] == "not resolved"
    sentence = knobs_text.flips(knobs.kl_verdicts(runs, at3))[0]
    assert "depends on the VAE's KL weight" in sentence and "KL weight 1: contradicted" in sentence
    # under the paper plan, three seeds give no verdict
    assert set(knobs.kl_verdicts(runs, PLAN)["verdict"]) == {"no verdict"}
    assert knobs.kl_verdicts(load_runs("paper", tracking_uri=store.uri), PLAN).empty  # one KL weight: nothing to vary


def test_claim1_along_the_vq_vaes_knobs(store):
    from analysis import knobs

    runs = load_runs("sensitivity", tracking_uri=store.uri)
    at3 = replace(PLAN, min_n=3)
    table = knobs.vq_axis_verdicts(runs, at3)
    # the paper's VQ-VAE once, then the K axis (D and beta do not vary in this store), each against the VAE at KL 0.01
    assert list(zip(table["knob"], table["value"])) == [("centre", 0.0), ("num_codes", 32.0), ("num_codes", 128.0), ("num_codes", 2048.0)]
    vae = SENSITIVITY_KL[0.01]
    for row, k in zip(table.to_dict("records"), (512, 32, 128, 2048)):
        ref = stats.ttest_rel(SENSITIVITY_K[k], vae)
        assert row["n"] == 3 and math.isclose(row["difference"], np.mean(np.subtract(SENSITIVITY_K[k], vae)))
        assert math.isclose(row["p"], ref.pvalue)
    kl = knobs.kl_verdicts(runs, at3)
    assert np.allclose(table["p_holm"].iloc[1:], _sensitivity_family(kl, table)[4:])
    centre = kl[np.isclose(kl["kl_weight"], 0.01)].iloc[0]
    assert table.loc[0, "p_holm"] == centre["p_holm"] and table.loc[0, "verdict"] == centre["verdict"]  # one test, one verdict
    assert table.loc[1, "verdict"] == "supported"  # K=32: 6.5 points below the VAE, 3 seeds that agree
    (sentence,) = knobs_text.vq_flips(table)
    assert sentence.startswith("MNIST (label_embedding=none), 4 VQ-VAE settings: ") and "K=32" in sentence
    assert knobs.vq_axis_verdicts(load_runs("paper", tracking_uri=store.uri), PLAN).empty  # one VQ-VAE setting: no axis


def test_report_knobs_section(store, tmp_path):
    out = tmp_path / "knobs"
    assert report_main(["--experiment", "sensitivity", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## Does the answer depend on the knobs?" in text and "claim 1 is *no verdict: n = 3 < 5* at every KL weight" in text
    assert "### Claim 1 along the VQ-VAE's K, D and beta" in text and "4 VQ-VAE settings" in text and "| K=2048 " in text
    for name in ("frontier.png", "sensitivity_num_codes.png", "sensitivity_kl_weight.png"):
        assert (out / "figures" / name).is_file() and f"figures/{name}" in text
    assert "beta (commitment cost): skipped" in text and "D (code dimension): skipped" in text
    assert not (out / "figures" / "sensitivity_beta.png").exists()
    # a sweep without a KL axis or K axis says why those parts are skipped
    assert report_main(["--experiment", "single", "--tracking-uri", store.uri, "--out", str(tmp_path / "single")]) == 0
    single = (tmp_path / "single" / "report.md").read_text()
    assert "do not vary the VAE's KL weight" in single and "Skipped: neither the VAE's KL weight nor" in single
    assert "do not vary the VQ-VAE's K, D or beta" in single
    assert not (tmp_path / "single" / "figures" / "frontier.png").exists()


def test_report_header_names_precisions_and_warns_when_runs_were_probed_differently():
    from analysis.report_header import settings_lines

    runs = pd.DataFrame({"precision": ["fp32", "fp32", "bf16"], "probe.max_epochs": [60, 60, 40], "probe.patience": [3, 3, 4]})
    lines = settings_lines(runs)
    assert lines[0] == "- Precision: bf16 (1 run(s)), fp32 (2 run(s))"
    assert "max_epochs=60, patience=3 (2 run(s))" in lines[1] and "max_epochs=40, patience=4 (1 run(s))" in lines[1]
    assert lines[2].startswith("- **Warning:** these runs were probed in 2 different ways")
    same = settings_lines(runs.iloc[:2])
    assert len(same) == 2 and "Warning" not in "".join(same)


def test_a_runs_csv_exported_before_a_config_field_existed_still_reads(paper_runs, tmp_path):
    from analysis.run_columns import LATER_CONFIG, VAE_ONLY, VQ_ONLY
    from analysis.runs_csv import read_runs_csv, write_runs_csv

    path = tmp_path / "old.csv"
    write_runs_csv(paper_runs.drop(columns=list(LATER_CONFIG)), path)
    old = read_runs_csv([path])
    for column, before in LATER_CONFIG.items():
        if column in VAE_ONLY:  # a rate-matched VAE's knobs: no older run is one, so they mean nothing in any row
            assert old[column].isna().all()
        elif column in VQ_ONLY:  # the quantizer: the paper's on every older VQ-VAE, nothing on a VAE
            vq = old["model"] == "vqvae"
            assert (old.loc[vq, column] == before).all() and old.loc[~vq, column].isna().all()
        else:
            assert (old[column] == before).all()
    # an evaluation switch is not a setting: old and new runs of one config share their Table 1 row
    mixed = pd.concat([old, paper_runs.assign(run_id=paper_runs["run_id"] + "-new")], ignore_index=True)
    assert len(tables.table1(mixed)) == len(tables.table1(paper_runs))
