"""The perf scripts in --tiny mode: each runs, appends one JSON line, and derives its ratios from its own figures.

Tiny figures mean nothing about speed; these tests keep the scripts from rotting.
"""

from __future__ import annotations

import itertools
import json
import math

import pandas as pd
import pytest
import torch

from benchmark.config import TrialConfig
from benchmark.evaluation.probe_settings import REFERENCE_MLP_GRID, ProbeSettings
from benchmark.models import build_model
from benchmark.saved_model import save_model
from perf import (
    cluster_scale,
    eval_cost,
    gpu_packing,
    precision_check,
    probe_convergence,
    probe_ranking,
    sweep_overhead,
    train_probe_cost,
    train_throughput,
    trials_per_hour,
)
from perf.record import Options

REQUIRED = {"script", "date", "command", "tiny", "machine", "options", "figures", "conclusions"}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """Scripts set torch's thread count for the whole process; give the next test its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(module, tmp_path, *extra: str) -> dict:
    out = tmp_path / "r.jsonl"
    assert module.main(["--tiny", "--out", str(out), *extra]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 1, "one run appends exactly one line"
    record = json.loads(lines[0])
    name = module.__name__.split(".")[-1]
    assert REQUIRED <= set(record)
    assert record["script"] == name and record["tiny"] is True
    assert record["command"].startswith(f"python -m perf.{name} --tiny --out ")
    assert record["machine"]["cores"] >= 1 and record["machine"]["torch"] == torch.__version__
    assert record["figures"] and all(isinstance(v, float) and math.isfinite(v) for v in record["figures"].values())
    return record


def positive(figures: dict[str, float], *keys: str) -> None:
    for key in keys:
        assert figures[key] > 0, key


def derived(value: float, expected: float) -> None:
    """Figures are stored to 6 significant digits: a ratio matches the quotient of its stored parts."""
    assert value == pytest.approx(expected, rel=1e-4)


def test_options_take_full_defaults_tiny_ones_or_what_is_given():
    options = Options("example", None)
    options.sized("--images", 6400, 64, "images")
    options.sized("--models", ("vae", "vqvae"), ("vqvae",), "models")
    assert (options.parse([]).images, options.parse([]).models) == (6400, ("vae", "vqvae"))
    tiny = options.parse(["--tiny"])
    assert (tiny.images, tiny.models) == (64, ("vqvae",))
    given = options.parse(["--tiny", "--images", "10", "--models", "vae"])
    assert (given.images, given.models) == (10, ("vae",))
    assert given.command == "python -m perf.example --tiny --images 10 --models vae"


def test_train_throughput(tmp_path):
    record = run(train_throughput, tmp_path)
    f = record["figures"]
    positive(f, "matmul_gflops")
    for model in ("vae", "vqvae"):
        for shape in ("mnist", "cifar"):
            k = f"{model}/{shape}"
            positive(f, f"{k}/flop_per_image", f"{k}/limit_img_s")
            assert 10e6 < f[f"{k}/flop_per_image"] < 200e6  # the paper's small conv nets: tens of MFLOP per image
            derived(f[f"{k}/limit_img_s"], f["matmul_gflops"] * 1e9 / f[f"{k}/flop_per_image"])
            for variant in ("reference", "fp32", "bf16"):
                positive(f, f"{k}/{variant}_img_s", f"{k}/{variant}_of_limit")
                derived(f[f"{k}/{variant}_of_limit"], f[f"{k}/{variant}_img_s"] / f[f"{k}/limit_img_s"])
            for variant in ("fp32", "bf16"):
                derived(f[f"{k}/{variant}_vs_reference"], f[f"{k}/{variant}_img_s"] / f[f"{k}/reference_img_s"])
    # a second run appends, never overwrites
    assert train_throughput.main(["--tiny", "--models", "vqvae", "--shapes", "mnist", "--out", str(tmp_path / "r.jsonl")]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2


def test_precision_check_runs_both_precisions_here(tmp_path):
    record = run(precision_check, tmp_path)
    f = record["figures"]
    for check in precision_check.CHECKS:
        key = f"vqvae/{check.metric}"
        assert f[f"{key}/n"] == 2 and record["conclusions"][key] == "not resolved"  # two seeds: no verdict
        fp32, bf16 = f[f"{key}/fp32_mean"], f[f"{key}/bf16_mean"]
        if not check.relative:
            derived(f[f"{key}/diff_mean"], bf16 - fp32)
    positive(f, "vqvae/bf16_train_speedup")


def precision_runs_csv(path, seeds: int, bf16_accuracy_shift: float, precisions=("fp32", "bf16")):
    """A runs CSV as `analysis.export` writes it: both models, each seed in each precision."""
    rows = []
    for seed, precision, model in itertools.product(range(seeds), precisions, ("vae", "vqvae")):
        config = TrialConfig(model=model, dataset="mnist", seed=seed, precision=precision).to_dict()
        bf16 = precision == "bf16"
        wobble = 0.0005 * (-1) ** seed if bf16 else 0.0  # bf16 differs from fp32 by a little, not the same each seed
        rows.append(
            {
                "experiment": "e",
                "sweep": "s",
                "run_id": f"{model}-{seed}-{precision}",
                "parent_run_id": "p",
                "run_name": "r",
                "status": "FINISHED",
                "error": "",
                "start_time": 0,
                "end_time": 0,
                **config,
                "config_id": "c",
                "device": "cpu",
                "git_commit": "",
                "leaks_label": False,
                "probe/latent/mlp_acc": 0.96 + 0.002 * seed + wobble + bf16 * bf16_accuracy_shift,
                "recon/ssim": 0.80 + 0.01 * seed + wobble,
                "recon/mse": 0.010 * (1 + 0.1 * seed) * (1 + wobble),
                "time/train_s": 80.0 if bf16 else 100.0,
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def test_precision_check_judges_exported_runs_by_the_paired_interval(tmp_path):
    same = run(precision_check, tmp_path, "--runs", precision_runs_csv(tmp_path / "same.csv", seeds=4, bf16_accuracy_shift=0.0))
    assert all(
        same["conclusions"][f"{model}/{check.metric}"] == "equivalent" for model in ("vae", "vqvae") for check in precision_check.CHECKS
    )
    derived(same["figures"]["vae/bf16_train_speedup"], 100.0 / 80.0)
    assert same["figures"]["vae/probe/latent/mlp_acc/n"] == 4
    (tmp_path / "r.jsonl").unlink()
    worse = run(precision_check, tmp_path, "--runs", precision_runs_csv(tmp_path / "worse.csv", seeds=4, bf16_accuracy_shift=-0.02))
    assert worse["conclusions"]["vqvae/probe/latent/mlp_acc"] == "not shown"  # 2 points lower: outside the ±0.5 margin
    assert worse["conclusions"]["vqvae/recon/ssim"] == "equivalent"
    (tmp_path / "r.jsonl").unlink()
    few = run(precision_check, tmp_path, "--runs", precision_runs_csv(tmp_path / "few.csv", seeds=2, bf16_accuracy_shift=0.0))
    assert set(few["conclusions"].values()) == {"not resolved"}


def test_precision_check_refuses_runs_of_one_precision(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        precision_check.main(["--out", str(tmp_path / "r.jsonl"), "--runs", precision_runs_csv(tmp_path / "one.csv", 3, 0.0, ("fp32",))])
    assert done.value.code == 2 and "both fp32 and bf16 runs are needed" in capsys.readouterr().err
    assert not (tmp_path / "r.jsonl").exists()


def test_precision_check_needs_a_seed(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        precision_check.main(["--tiny", "--seeds", "0", "--out", str(tmp_path / "r.jsonl")])
    assert done.value.code == 2 and "--seeds must be at least 1" in capsys.readouterr().err


def test_eval_cost(tmp_path):
    f = run(eval_cost, tmp_path)["figures"]
    pieces = ("encode_train", "encode_test", "probe_latent", "probe_codes", "probe_pixels_cached", "reconstruction", "tsne_figure")
    positive(f, "epoch_s", "eval_total_s", "probe_pixels_first_s", *(f"{p}_s" for p in pieces))
    derived(f["training_10_epochs_s"], 10 * f["epoch_s"])
    derived(f["eval_total_s"], sum(f[f"{p}_s"] for p in pieces))
    # before: protocol 2's probes on the same features, everything else the same
    positive(f, "before/probe_latent_s", "before/probe_codes_s", "before/probe_pixels_first_s")
    derived(
        f["before/eval_total_s"],
        f["eval_total_s"] - f["probe_latent_s"] - f["probe_codes_s"] + f["before/probe_latent_s"] + f["before/probe_codes_s"],
    )
    # the first trial on a machine computes the pixel probes; every later one reads them
    derived(f["eval_total_first_s"], f["eval_total_s"] - f["probe_pixels_cached_s"] + f["probe_pixels_first_s"])
    derived(f["eval_total_first_share"], f["eval_total_first_s"] / f["training_10_epochs_s"])
    assert f["probe_pixels_cached_s"] < f["probe_pixels_first_s"]
    for piece in pieces:
        derived(f[f"{piece}_share"], f[f"{piece}_s"] / f["training_10_epochs_s"])
    derived(f["eval_total_share"], f["eval_total_s"] / f["training_10_epochs_s"])


def test_probe_convergence(tmp_path):
    f = run(probe_convergence, tmp_path, "--factor", "2", "--grid")["figures"]
    model = "vqvae-digits-K512-D64-b0.25-s0"
    reps = (f"{model}/latent", f"{model}/codes", "pixels")
    for rep in reps:
        mlp, linear = f"{rep}/mlp", f"{rep}/linear"
        assert 0 <= f[f"{mlp}/probe_acc"] <= 1 and 0 <= f[f"{mlp}/long_acc"] <= 1
        # the protocol's fixed budget (--tiny: 4 epochs), and the longer schedule exactly factor x it, at the grid's choice
        assert f[f"{mlp}/probe_epochs"] == 4 and f[f"{mlp}/long_epochs"] == 2 * f[f"{mlp}/probe_epochs"]
        assert f[f"{mlp}/lr"] in ProbeSettings().mlp_lrs and f[f"{mlp}/weight_decay"] in ProbeSettings().mlp_weight_decays
        assert f[f"{mlp}/restart_spread_points"] >= 0
        assert abs(100 * (f[f"{mlp}/restart_mean_acc"] - f[f"{mlp}/probe_acc"])) <= f[f"{mlp}/restart_spread_points"] + 1e-3
        # a difference of two accuracies stored to 6 significant digits: right to about 1e-4 points, whatever its size
        assert f[f"{mlp}/diff_points"] == pytest.approx(100 * (f[f"{mlp}/probe_acc"] - f[f"{mlp}/long_acc"]), abs=1e-3)
        assert f[f"{linear}/diff_points"] == pytest.approx(100 * (f[f"{linear}/acc"] - f[f"{linear}/tight_acc"]), abs=1e-3)
        assert f[f"{linear}/l2"] > 0 and f[f"{linear}/iters"] >= 0 and f[f"{linear}/capped"] in (0.0, 1.0)
        # every member of the reference grid, the protocol's own among them; the pick is the best held-out member,
        # a tie going to the protocol's own member, then to the grid's order
        own = f"lr{f[f'{mlp}/lr']:g}-wd{f[f'{mlp}/weight_decay']:g}"
        grid = [f"lr{lr:g}-wd{wd:g}" for lr in REFERENCE_MLP_GRID[0] for wd in REFERENCE_MLP_GRID[1]]
        assert {k.split("/")[-2] for k in f if k.startswith(f"{mlp}/grid/")} == {own, *grid}
        pick = max([own, *(m for m in grid if m != own)], key=lambda m: f[f"{mlp}/grid/{m}/held_acc"])
        assert f[f"{mlp}/grid_best_acc"] == f[f"{mlp}/grid/{pick}/test_acc"]
        assert f[f"{mlp}/grid/{own}/test_acc"] == f[f"{mlp}/probe_acc"]
    assert f["worst_abs_diff_points"] == max(abs(f[f"{rep}/{p}/diff_points"]) for rep in reps for p in ("mlp", "linear"))
    assert f["worst_restart_spread_points"] == max(f[f"{rep}/mlp/restart_spread_points"] for rep in reps)


def test_probe_convergence_probes_saved_models_and_refuses_another_dataset(tmp_path, capsys):
    config = TrialConfig(model="vae", dataset="digits", epochs=1, code_dim=8)
    path = save_model(build_model(config, 1, 10), config, tmp_path, 1, 10)
    f = run(probe_convergence, tmp_path, "--models-from", str(path))["figures"]
    assert {key.split("/mlp/")[0].split("/linear/")[0] for key in f if "/" in key} == {"vae-digits-D8-kl0.01-s0/latent", "pixels"}
    (tmp_path / "alone").mkdir()
    f = run(probe_convergence, tmp_path / "alone", "--models-from", str(path), "--no-pixels")["figures"]
    assert {key.split("/mlp/")[0].split("/linear/")[0] for key in f if "/" in key} == {"vae-digits-D8-kl0.01-s0/latent"}
    with pytest.raises(SystemExit) as exit:
        probe_convergence.main(["--tiny", "--dataset", "mnist", "--out", str(tmp_path / "x.jsonl"), "--models-from", str(path)])
    assert exit.value.code == 2
    assert "trained on digits, not --dataset mnist" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_probe_convergence_checks_a_candidate_mlp_budget_alone(tmp_path, capsys):
    """A next protocol's budget is checked before it is adopted: that many epochs against 4x them, no linear probe."""
    config = TrialConfig(model="vae", dataset="digits", epochs=1, code_dim=8)
    path = save_model(build_model(config, 1, 10), config, tmp_path, 1, 10)
    f = run(probe_convergence, tmp_path, "--models-from", str(path), "--no-pixels", "--no-linear", "--mlp-epochs", "3")["figures"]
    rep = "vae-digits-D8-kl0.01-s0/latent"
    assert f[f"{rep}/mlp/probe_epochs"] == 3 and f[f"{rep}/mlp/long_epochs"] == 12
    assert not [key for key in f if "/linear/" in key]
    assert "MLP budget 3 epochs (not the protocol's)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        probe_convergence.main(["--tiny", "--out", str(tmp_path / "x.jsonl"), "--models-from", str(path), "--mlp-epochs", "0"])
    assert exit.value.code == 2 and "--mlp-epochs 0" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.slow
def test_trials_per_hour(tmp_path):
    record = run(trials_per_hour, tmp_path)
    f, cores = record["figures"], record["options"]["cores"]
    single, parallel = f"1_trial_x_{cores}_threads", f"{cores}_trials_x_1_thread"
    for precision in ("fp32", "bf16"):
        for layout in (single, parallel):
            name = f"{precision}/{layout}"
            positive(f, *(f"{name}/{k}" for k in ("epoch_s", "eval_s", "trial_s", "trials_per_hour")))
            assert f[f"{name}/fixed_s"] >= 0
            # the extrapolated trial is the measured one with its training stretched to --trial-epochs
            stretched = f[f"{name}/fixed_s"] + f[f"{name}/eval_s"] + record["options"]["trial_epochs"] * f[f"{name}/epoch_s"]
            derived(f[f"{name}/trial_s"], stretched)
        derived(f[f"{precision}/{single}/trials_per_hour"], 3600 / f[f"{precision}/{single}/trial_s"])
        ratio = f[f"{precision}/{parallel}/trials_per_hour"] / f[f"{precision}/{single}/trials_per_hour"]
        derived(f[f"{precision}/parallel_vs_single"], ratio)
        assert record["conclusions"][f"recommended_cpus_per_trial/{precision}"] == (
            1 if f[f"{precision}/parallel_vs_single"] >= 1 else cores
        )
    for layout in (single, parallel):  # fp32 is the reference measured in the same run
        derived(f[f"bf16_vs_fp32/{layout}"], f[f"bf16/{layout}/trials_per_hour"] / f[f"fp32/{layout}/trials_per_hour"])


@pytest.mark.slow
def test_sweep_overhead(tmp_path):
    record = run(sweep_overhead, tmp_path)
    f = record["figures"]
    assert f["trials"] == 2  # smoke: a VAE and a VQ-VAE for the one tiny seed
    positive(
        f,
        "sweep_wall_s",
        "driver_start_s",
        "ray_start_to_first_trial_s",
        "trainable_import_s",
        "trial_overhead_median_s",
        "train_eval_median_s",
        "worker_processes",
        "concurrent_slots",
    )
    assert f["epoch_report_median_s"] >= 0 and f["after_last_trial_s"] >= 0
    assert f["trial_overhead_median_s"] < f["sweep_wall_s"] and 0 < f["outside_train_eval_share"] < 1
    assert f["figures_median_s"] > 0 and f["trial_fixed_median_s"] < f["trial_overhead_median_s"]
    assert 1 <= f["worker_processes"] <= f["trials"]
    assert record["conclusions"]["actors_reused"] == (f["worker_processes"] < f["trials"])


@pytest.mark.slow
def test_cluster_scale(tmp_path):
    record = run(cluster_scale, tmp_path, "--nodes", "2")  # a worker node beside the head: the cluster case, one node's start less
    f = record["figures"]
    assert f["trials"] == 8 and f["nodes"] == 2 and f["finished_runs_on_server"] == 8  # every trial's run reached the server
    positive(
        f,
        "sweep_wall_s",
        "experiment_state_bytes",
        *(f"bucket{b}_{k}" for b in (1, 2) for k in ("trial_s_p50", "open_ms_p50", "finish_ms_p50")),
    )
    assert all(f[f"bucket{b}_log_metrics_ms_p95"] >= f[f"bucket{b}_log_metrics_ms_p50"] > 0 for b in (1, 2))
    derived(f["trials_per_minute"], 60 * f["trials"] / f["sweep_wall_s"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message a machine without a GPU prints")
def test_gpu_packing_without_a_gpu_says_so_and_exits_0(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert gpu_packing.main(["--tiny", "--out", str(out)]) == 0
    assert "no GPU present" in capsys.readouterr().out
    assert not out.exists()


@pytest.mark.slow
def test_gpu_packing_mechanism(tmp_path):
    """Packed worker processes, barrier and aggregation, on CPU cores where no GPU is present."""
    record = run(gpu_packing, tmp_path, *([] if torch.cuda.is_available() else ["--device", "cpu"]))
    f = record["figures"]
    for n in (1, 2):
        positive(f, f"{n}_trials/aggregate_img_s", f"{n}_trials/per_trial_img_s")
        derived(f[f"{n}_trials/per_trial_img_s"], f[f"{n}_trials/aggregate_img_s"] / n)
        derived(f[f"{n}_trials/vs_1_trials"], f[f"{n}_trials/aggregate_img_s"] / f["1_trials/aggregate_img_s"])


def test_an_out_that_cannot_be_written_is_refused_before_measuring(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit:
        train_probe_cost.main(["--tiny", "--out", str(tmp_path / "a_file" / "r.jsonl")])
    assert exit.value.code == 2
    assert f"{tmp_path / 'a_file'} is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_train_probe_cost(tmp_path):
    f = run(train_probe_cost, tmp_path)["figures"]
    positive(f, "vqvae_epoch_s", "vqvae_probe_s")
    derived(f["vqvae_share"], f["vqvae_probe_s"] / f["vqvae_epoch_s"])


def test_probe_ranking(tmp_path):
    f = run(probe_ranking, tmp_path)["figures"]
    assert f["configs"] == 4 and -1 <= f["all_probe_spearman"] <= 1 and 0 <= f["all_probe_p"] <= 1
