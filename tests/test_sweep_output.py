"""What a person sees and gets back from a sweep: its console output, its dry runs, its reloadable models."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray.tune import choice, lograndint, loguniform, qrandint, randn, uniform
from ray.tune.experiment import Trial

from benchmark import load_model
from benchmark.config import ConfigError, TrialConfig
from benchmark.data import load_dataset
from benchmark.evaluation.evaluate import represent_split
from benchmark.evaluation.reconstruction import reconstruction_metrics
from benchmark.result_keys import DIVERGED, EPOCH, FAILED, MLFLOW_RUN_ID
from benchmark.space import available_spaces
from benchmark.sweep import cli, trainable
from benchmark.sweep.dry_run import domain_text
from benchmark.sweep.progress import COLUMNS, SweepProgress, trial_dirname, trial_name
from benchmark.tracking.runs import start_sweep_run
from benchmark.tracking.store import DEFAULT_EXPERIMENT, TrackingTarget, ensure_experiment
from benchmark.train import scale
from tests.conftest import REPO
from tests.test_endings import offline

SMOKE_LINE_BUDGET = 150  # issue 19: the smoke space in under 150 lines, stdout and stderr together


@dataclass
class FinishedSweep:
    folder: Path
    output: list[str]
    client: MlflowClient
    uri: str
    runs: list


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory) -> FinishedSweep:
    """The smoke space as a new user runs it: the CLI in a fresh folder, default store and results folder."""
    folder = tmp_path_factory.mktemp("smoke")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.sweep", "--space", "smoke", "--name", "readable"],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id], "tags.`vqbench.role` = 'trial'")
    return FinishedSweep(folder, proc.stdout.splitlines(), client, uri, runs)


@pytest.mark.slow
def test_smoke_sweep_output_is_short_and_names_each_trial_as_its_run(smoke_sweep):
    output, text = smoke_sweep.output, "\n".join(smoke_sweep.output)
    assert len(output) < SMOKE_LINE_BUDGET, text
    for noise in ("╭", "TensorBoard", "snapshotting", "Started a local Ray instance", "tune_trial_"):
        assert noise not in text, f"{noise!r} in the output:\n{text}"
    header = next(line for line in output if line.startswith("trial "))
    assert header.split() == ["trial"] + [name for name, _ in COLUMNS]
    assert len(smoke_sweep.runs) == 2
    for run in smoke_sweep.runs:
        name, run_id = run.info.run_name, run.info.run_id
        assert name == TrialConfig.from_params(run.data.params).name
        assert any(re.fullmatch(rf"{re.escape(name)}\s.*\s1/1\s+\S+\s+\S+\s+done\s+{run_id}", line) for line in output), text
    assert "[smoke] 2 of 2 trials done, 0 failed, 0 running" in text
    # Ray's trial folders carry the same names; ./ray_results and ./mlartifacts land in the working directory
    folders = sorted(p.name for p in (smoke_sweep.folder / "ray_results" / "readable" / "smoke").iterdir() if p.is_dir())
    assert [f.rsplit("_", 2)[0] for f in folders] == sorted(r.info.run_name for r in smoke_sweep.runs)
    assert (smoke_sweep.folder / "mlartifacts").is_dir()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="bit-identical numbers are promised on the CPU only")
def test_reloaded_model_reproduces_its_runs_test_mse_exactly(smoke_sweep, one_torch_thread):
    for run in smoke_sweep.runs:
        model, config = load_model(run.info.run_id, smoke_sweep.uri)
        assert config == TrialConfig.from_params(run.data.params)
        data = load_dataset(config.dataset)
        recon = represent_split(model, data.test_x, data.test_y, config, decode=True)["recon"]
        assert reconstruction_metrics(scale(data.test_x), recon)["mse"] == run.data.metrics["recon/mse"]


def stub_trial(config: dict, status: str, **result) -> Trial:
    trial = Trial("tune_trial", config={"trial": config}, stub=True, trial_name_creator=trial_name)
    trial.update_last_result(result)
    trial.set_status(status)
    return trial


def test_progress_tells_done_stopped_diverged_failed_running_and_evaluating_apart(capsys):
    base = {"model": "vqvae", "dataset": "mnist", "epochs": 10}
    final = {FAILED: 0.0, DIVERGED: 0.0}  # the keys of the trainable's final report (the test below runs the real one)
    done = stub_trial({**base, "seed": 0}, Trial.TERMINATED, **{EPOCH: 10, **final, MLFLOW_RUN_ID: "r0"})
    stopped = stub_trial({**base, "seed": 1}, Trial.TERMINATED, **{EPOCH: 2, MLFLOW_RUN_ID: "r1"})
    diverged = stub_trial({**base, "seed": 2}, Trial.TERMINATED, **{EPOCH: 3, FAILED: 1.0, DIVERGED: 1.0, MLFLOW_RUN_ID: "r2"})
    running = stub_trial({**base, "seed": 3}, Trial.RUNNING, **{EPOCH: 5, "train/recon_loss": 0.01234, "train/perplexity": 87.0})
    evaluating = stub_trial({**base, "seed": 4}, Trial.RUNNING, **{EPOCH: 10, MLFLOW_RUN_ID: "r4"})
    failed = stub_trial({**base, "seed": 5}, Trial.TERMINATED, **{EPOCH: 4, FAILED: 1.0, DIVERGED: 0.0, MLFLOW_RUN_ID: "r5"})
    trials = [done, stopped, diverged, running, evaluating, failed]
    progress = SweepProgress("study", name_width=30, every_s=0)
    progress.setup(total_num_samples=6)
    progress.on_step_end(0, trials)
    for trial in (running, evaluating):
        progress.on_trial_result(1, trials, trial, trial.last_result)
    for trial in (done, stopped, diverged, failed):
        progress.on_trial_complete(1, trials, trial)
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out if line.startswith("vqvae-")}
    assert rows["vqvae-mnist-K512-D64-b0.25-s3"][-5:] == ["5/10", "0.0123", "87.0", "running", "-"]
    assert [rows[f"vqvae-mnist-K512-D64-b0.25-s{seed}"][-2] for seed in (0, 1, 2, 4, 5)] == [
        "done",
        "stopped",
        "diverged",
        "evaluating",
        "failed",
    ]
    assert out[-1].startswith("[study] 2 of 6 trials done (1 stopped early), 2 failed, 2 running; elapsed ")
    assert trial_dirname(done) == f"vqvae-mnist-K512-D64-b0.25-s0_{done.trial_id}"


class TuneSession:
    """Ray Tune's side of one trial, for the real trainable run in this process: what it reports, in order."""

    def __init__(self, monkeypatch) -> None:
        self.reports: list[dict] = []
        resources = SimpleNamespace(required_resources={"CPU": 1})
        monkeypatch.setattr(trainable.tune, "report", lambda metrics, checkpoint=None: self.reports.append(dict(metrics)))
        monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: None)
        monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_resources=lambda: resources))
        monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "node-a"))


@pytest.mark.parametrize(
    ("ending", "config", "status"),
    [
        ("finished", {"model": "vae", "epochs": 1}, "done"),
        ("diverged", {"model": "vqvae", "num_codes": 16, "epochs": 2, "lr": 1e9}, "diverged"),
        ("failed on its data", {"model": "vae", "dataset": "mnist", "epochs": 1}, "failed"),
    ],
)
def test_progress_tells_each_ending_from_what_the_trainable_reports(
    tmp_path, monkeypatch, capsys, one_torch_thread, ending, config, status
):
    """The real trainable's reports, not hand-written ones: a key renamed on one side only shows here."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "t", uri)
    target = TrackingTarget(uri, experiment, start_sweep_run(client, experiment, "s", {}, {}))
    trial_config = TrialConfig.from_dict({"dataset": "digits", "train_probe_every": 0, **config})
    session = TuneSession(monkeypatch)
    trainable.tune_trial(
        {"trial": trial_config.to_dict(), "tracking": asdict(target), "data_dir": str(tmp_path / "no-data"), "log_model": False}
    )
    trial = stub_trial(trial_config.to_dict(), Trial.RUNNING)
    progress = SweepProgress("study", name_width=30, every_s=0)
    progress.setup(total_num_samples=1)
    for result in session.reports:
        trial.update_last_result(result)
        progress.on_trial_result(1, [trial], trial, result)
    trial.set_status(Trial.TERMINATED)  # a trial that failed deterministically returns normally: Ray calls it complete
    progress.on_trial_complete(2, [trial], trial)
    out = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in out if line.startswith(trial_config.name)]
    assert rows[-1][-2:] == [status, session.reports[-1][MLFLOW_RUN_ID]], "\n".join(out)
    failed = status != "done"
    assert out[-1].startswith(f"[study] {0 if failed else 1} of 1 trial done, {int(failed)} failed, 0 running; "), "\n".join(out)


# each space: its trial count and the datasets it needs that are not embedded
SPACES = {
    "smoke": (2, []),
    "quick": (8, []),
    "paper": (24, ["cifar100", "mnist"]),
    "grid": (288, ["mnist"]),
    "optuna": (40, ["mnist"]),
    "pareto": (40, ["mnist"]),
    "sensitivity": (39, ["mnist"]),
    "rate": (27, ["mnist"]),
    "quantizers": (110, ["mnist"]),
}


def test_every_space_is_dry_run_below():
    assert set(SPACES) == set(available_spaces())


@pytest.mark.parametrize("space", SPACES)
def test_every_space_dry_runs_without_data(tmp_path, monkeypatch, capsys, space):
    count, missing = SPACES[space]
    monkeypatch.setenv("VQBENCH_DATA_DIR", str(tmp_path))
    assert cli.main(["--space", space, "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"{count} trials in space {space!r}"
    for dataset in missing:
        fetch = f"python -m benchmark.data {dataset} --data-dir {tmp_path} --download"
        line = next(line for line in out if line.startswith(f"  {dataset}: "))
        # where it looked, and both ways to point elsewhere, before the download
        assert line.startswith(f"  {dataset}: missing in {tmp_path} (") and "--data-dir" in line and "$VQBENCH_DATA_DIR" in line
        assert line.endswith(f"fetch it with `{fetch}`")
    assert ("  digits: embedded in scikit-learn" in out) == (space in ("smoke", "quick"))


@pytest.mark.parametrize("address", [[], ["--address", "local"]])
def test_dry_run_reports_data_present_or_fetched_before_ray_starts(tmp_path, monkeypatch, capsys, address):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).touch()
    monkeypatch.setenv("VQBENCH_DATA_DIR", str(tmp_path))
    assert cli.main(["--space", "paper", "--dry-run", "--download", *address]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  mnist: present" in out and "  cifar100: missing; fetched once, on this machine, before Ray starts (--download)" in out


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
@pytest.mark.parametrize("address", ["auto", "10.0.0.1:6379", "ray://10.0.0.1:10001"])
def test_download_with_a_cluster_is_refused_saying_how_to_stage_the_data(tmp_path, monkeypatch, capsys, address, dry_run):
    """--download fetches on the driver's machine only: on a cluster, trials on the other nodes would fail without the data."""
    offline(monkeypatch)  # were it not refused, its fetch would fail here, not reach the internet
    monkeypatch.chdir(tmp_path)
    argv = ["--space", "paper", "--datasets", "mnist,cifar100", "--data-dir", str(tmp_path / "data"), "--download", "--address", address]
    assert cli.main(argv + dry_run) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(
        "error: --download fetches data on this machine only, and with --address the trials run on the cluster's other nodes"
    )
    for how in ("`python -m benchmark.data cifar100 mnist --data-dir data --download`", "file_mounts", "setup_commands", "EFS"):
        assert how in err
    assert list(tmp_path.iterdir()) == [], "something was written or fetched before the refusal"


def test_download_with_a_cluster_and_only_embedded_data_says_there_is_nothing_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--space", "smoke", "--download", "--address", "auto"]) == 2
    assert capsys.readouterr().err == (
        "error: --download with --address: this sweep's only dataset, digits, is embedded in scikit-learn "
        "and every node has it: leave out --download\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_dry_run_says_one_trial_not_one_trials(capsys):
    assert cli.main(["--space", "smoke", "--only", "model=vae", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 trial in space 'smoke'"


def test_optuna_dry_run_writes_domains_as_a_person_does(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VQBENCH_DATA_DIR", str(tmp_path))
    assert cli.main(["--space", "optuna", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "object at 0x" not in out
    assert "  num_codes ~ log-uniform int [16, 2048)" in out and "  code_dim ~ one of [16, 32, 64, 128]" in out
    assert domain_text(uniform(0.05, 1.0)) == "uniform [0.05, 1]"
    assert domain_text(loguniform(1e-4, 1.0)) == "log-uniform [0.0001, 1]"
    assert domain_text(lograndint(16, 2048)) == "log-uniform int [16, 2048)"
    assert domain_text(choice(["none", "add"])) == "one of ['none', 'add']"
    assert domain_text(qrandint(8, 64, 8)) == "uniform int [8, 64] in steps of 8"
    assert domain_text(randn(0, 2)) == "normal(mean 0, sd 2)"


def test_bool_options_say_what_they_accept():
    with pytest.raises(ConfigError, match=r"ema='yes' is not allowed: write true or false \(or 1 or 0\)"):
        TrialConfig.from_dict({"ema": "yes"})


@pytest.mark.parametrize("module", ["benchmark.trial", "benchmark.sweep.cli"])
def test_help_gives_each_option_one_default(module, capsys):
    with pytest.raises(SystemExit):
        importlib.import_module(module).main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert not re.search(r"\(default: [^)]*\) \(default:", text), text
