"""Every way a sweep ends is reported as what it is: in MLflow, in its summary and in its exit code.

Real Ray, real sqlite MLflow stores, real files; the slow ones run real sweeps on digits.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from benchmark.config import TrialConfig
from benchmark.result_keys import EPOCH, FAILED, MLFLOW_RUN_ID
from benchmark.space import available_spaces
from benchmark.sweep import cli, interrupt
from benchmark.sweep.runner import stopped_early
from benchmark.sweep.state import SWEEP_FILE
from benchmark.sweep.summary import read_outcome, render
from benchmark.sweep.summary import table as summary_table
from benchmark.tracking.runs import ERROR_TAG, INTERRUPTED_TAG, STOPPED_TAG, close_stopped, mark_interrupted, start_sweep_run
from benchmark.tracking.store import TrackingTarget, ensure_experiment
from tests.conftest import REPO
from tests.test_data import IDX_NAMES, LABEL_MAGIC, write_cifar10, write_idx, write_idx_dataset
from tests.test_reliability import finished_steps, runs_by_config, sweep_process, wait_for, wait_for_sweep_start, write_space

# ---------------------------------------------------------------- refused before Ray: exit 2, one line, nothing written


def refused_fast(tmp_path: Path, monkeypatch, capsys, argv: list[str], expected: str, within_s: float = 20) -> str:
    import ray

    monkeypatch.chdir(tmp_path)
    before = set(tmp_path.rglob("*"))
    start = time.perf_counter()
    assert cli.main(argv) == 2
    elapsed = time.perf_counter() - start
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert set(tmp_path.rglob("*")) == before, "bad input left files behind (an MLflow store, Ray results)"
    assert not ray.is_initialized()
    assert elapsed < within_s, f"refusing took {elapsed:.0f} s"
    return err


def broken_mnist(root: Path, how: str) -> Path:
    """A small MNIST in torchvision's layout with one file broken the way a user's copy breaks."""
    write_idx_dataset(root, "MNIST", n_train=40, n_test=12)
    raw = root / "MNIST" / "raw"
    if how == "truncated":
        path = raw / IDX_NAMES[("train", "images")]
        path.write_bytes(path.read_bytes()[:-500])
    elif how == "fewer-labels":
        path = raw / IDX_NAMES[("train", "labels")]
        write_idx(path, np.zeros(30, dtype=np.uint8), LABEL_MAGIC)
    elif how == "not-idx":
        path = raw / IDX_NAMES[("test", "images")]
        path.write_bytes(b"<html>404 Not Found</html>")
    return path


@pytest.mark.parametrize(
    "how, expected",
    [
        ("truncated", "is truncated"),
        ("fewer-labels", "holds 40 images but"),
        ("not-idx", "is not a 3-D uint8 IDX file"),
    ],
)
def test_broken_idx_files_are_refused_before_ray(tmp_path, monkeypatch, capsys, how, expected):
    path = broken_mnist(tmp_path / "data", how)
    argv = ["--space", "smoke", "--datasets", "mnist", "--data-dir", str(tmp_path / "data")]
    err = refused_fast(tmp_path, monkeypatch, capsys, argv, expected)
    assert str(path) in err and "--download" in err  # the file, and how to fix it


def test_truncated_copy_of_real_mnist_is_refused_in_seconds(tmp_path, monkeypatch, capsys, shared_data):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in IDX_NAMES.values():
        shutil.copyfile(shared_data / "MNIST" / "raw" / name, raw / name)
    images = raw / IDX_NAMES[("train", "images")]
    with open(images, "r+b") as f:
        f.truncate(images.stat().st_size // 2)
    refused_fast(
        tmp_path,
        monkeypatch,
        capsys,
        ["--space", "smoke", "--datasets", "mnist", "--data-dir", str(tmp_path / "data")],
        f"{images} is truncated",
    )


def test_cifar_batch_with_missing_labels_is_refused_before_ray(tmp_path, monkeypatch, capsys):
    import pickle

    write_cifar10(tmp_path / "data")
    batch = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    entry = pickle.loads(batch.read_bytes())
    entry["labels"] = entry["labels"][:-1]
    batch.write_bytes(pickle.dumps(entry))
    refused_fast(
        tmp_path, monkeypatch, capsys, ["--space", "smoke", "--datasets", "cifar10", "--data-dir", str(tmp_path / "data")], str(batch)
    )


def offline(monkeypatch) -> None:
    """No network, whatever machine runs the tests: torchvision's downloads go through urllib, which honours these."""
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(key, "http://127.0.0.1:9")
    for key in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(key, raising=False)


def test_offline_download_is_refused_once_before_ray(tmp_path, monkeypatch, capsys):
    offline(monkeypatch)
    (tmp_path / "data").mkdir()
    argv = [
        "--space",
        "smoke",
        "--datasets",
        "mnist",
        "--data-dir",
        str(tmp_path / "data"),
        "--download",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot download mnist") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_data_cli_offline_download_is_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "PYTHONPATH": str(REPO)}
    env.pop("no_proxy", None)
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.data", "mnist", "--data-dir", str(tmp_path), "--download"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: cannot download mnist") and len(done.stderr.strip().splitlines()) == 1, done.stderr


def syntax_error_space(folder: Path) -> str:
    path = folder / "broken_space.py"
    path.write_text("def studies(options):\n    return [\n")
    return str(path)


def a_file(folder: Path) -> str:
    path = folder / "a_file"
    path.write_text("")
    return str(path)


def bad_space_files(folder: Path) -> dict[str, str]:
    """Space files whose studies() goes wrong in the ways a user's can."""
    header = "from ray import tune\nfrom benchmark.space import Study\nVAE = {'model': 'vae', 'dataset': 'digits', 'epochs': 1}\n"
    bodies = {
        "RAISES": "def studies(options):\n    raise ValueError('no such grid')\n",
        "RETURNS_NONE": "def studies(options):\n    return None\n",
        "RETURNS_DICTS": "def studies(options):\n    return [VAE]\n",
        "SAME_LABELS": "def studies(options):\n    return [Study('a', (VAE,)), Study('a', ({**VAE, 'seed': 1},))]\n",
        "SLASH_LABEL": "def studies(options):\n    return [Study('a/b', (VAE,))]\n",
        "NOT_A_DOMAIN": "def studies(options):\n    return [Study('s', base=VAE, search={'lr': 0.5}, metric='train/loss')]\n",
    }
    for name, body in bodies.items():
        (folder / f"{name.lower()}.py").write_text(header + body)
    return {name: str(folder / f"{name.lower()}.py") for name in bodies}


def damaged_sweep_state(folder: Path) -> None:
    (folder / "ray_results" / "damaged").mkdir(parents=True)
    (folder / "ray_results" / "damaged" / SWEEP_FILE).write_text("{")


# Every option of --help with its bad values; the ones argparse types itself are below.
OPTION_BATTERY = [
    (["--max-concurrent", "-1"], "--max-concurrent=-1"),
    (["--max-failures", "-1"], "--max-failures=-1"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial=0"),
    (["--cpus-per-trial", "nan"], "--cpus-per-trial=nan"),
    (["--gpus-per-trial", "-0.5"], "--gpus-per-trial=-0.5"),
    (["--gpus-per-trial", "inf"], "--gpus-per-trial=inf"),
    (["--seeds", "-2"], "--seeds=-2"),
    (["--epochs", "0"], "--epochs=0"),
    (["--num-samples", "0"], "--num-samples=0"),
    (["--num-samples", "3"], "--num-samples applies to searched spaces"),
    (["--tracking-uri", "bogus://x"], "scheme 'bogus'"),
    (["--tracking-uri", "sqlite://relative.db"], "sqlite:////abs/path/mlflow.db"),
    (["--tracking-uri", "sqlite:////no/such/folder/mlflow.db"], "/no/such/folder does not exist"),
    (["--tracking-uri", "http://127.0.0.1:9"], "cannot be reached"),
    (["--experiment", " "], "--experiment is empty"),
    (["--name", "a/b"], "--name 'a/b' is not allowed"),
    (["--name", ".."], "--name '..' is not allowed"),
    (["--storage-path", "FILE"], "is a file"),
    (["--data-dir", "FILE", "--datasets", "mnist"], "is a file"),
    (["--datasets", ","], "names no dataset"),
    (["--datasets", "digits,image net"], "dataset='image net' is not allowed"),
    (["--datasets", "digits,imagenet"], "dataset 'imagenet' is neither built in"),  # a name: an image folder that is not there
    (["--space", "nope"], "space='nope' is not known"),
    (["--space", "BROKEN"], "cannot be loaded (SyntaxError"),
    (["--space", "missing.py"], "does not exist"),
    (["--only", "model=gan"], "model='gan'"),
    (["--only", "model=vae|gan"], "model='gan'"),
    (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: no Ray head answers"),
    (["--address", "nonsense"], "not HOST:PORT"),
    (["--resume", "never-ran"], "no sweep at"),
    (["--resume", "damaged"], "is damaged (JSONDecodeError"),
    (["--resume", "never-ran", "--epochs", "3", "--seeds", "2"], "leave out --seeds, --epochs"),
    (["--tracking-uri", ""], "--tracking-uri is empty"),
    (["--storage-path", ""], "--storage-path is empty"),
    (["--data-dir", ""], "--data-dir is empty"),
    (["--seeds", "100000000"], "--seeds=100000000 is not allowed: at most 1000"),
    (["--cpus-per-trial", "1e-9"], "--cpus-per-trial=1e-09 is below the smallest share"),
    (["--gpus-per-trial", "1e-320"], "--gpus-per-trial=1e-320 is below the smallest share"),
    (["--tracking-uri", "sqlite:///FILE_NOT_DB"], "is not an SQLite database"),
    (["--tracking-uri", "postgresql://u@127.0.0.1:9/db"], "tracking store postgresql://u@127.0.0.1:9/db"),
    (["--space", "optuna", "--seeds", "3"], "--seeds: space 'optuna' does not use it"),
    (["--only", "seed"], "'seed' is not KEY=VALUE"),
    (["--only", "model=vae,"], "'' is not KEY=VALUE"),
    (["--only", "seed=-1"], "--only seed=-1: seed=-1 is not allowed"),
    (["--space", "RAISES"], "studies(options) raised ValueError: no such grid"),
    (["--space", "RETURNS_NONE"], "must return a list of benchmark.space.Study, not None"),
    (["--space", "RETURNS_DICTS"], "must return a list of benchmark.space.Study"),
    (["--space", "SAME_LABELS"], "study label 'a' must be a unique"),
    (["--space", "SLASH_LABEL"], "study label 'a/b'"),
    (["--space", "NOT_A_DOMAIN"], "searches lr=0.5, which is not a Ray Tune domain"),
]


@pytest.mark.parametrize("argv, expected", OPTION_BATTERY, ids=[" ".join(a) for a, _ in OPTION_BATTERY])
def test_every_bad_option_value_is_refused_before_anything_starts(tmp_path, monkeypatch, capsys, argv, expected):
    files = {"FILE": a_file(tmp_path), "BROKEN": syntax_error_space(tmp_path), **bad_space_files(tmp_path)}
    (tmp_path / "not_a_db.txt").write_text("hello")
    files["sqlite:///FILE_NOT_DB"] = f"sqlite:///{tmp_path / 'not_a_db.txt'}"
    damaged_sweep_state(tmp_path)
    argv = [files.get(a, a) for a in argv]
    refused_fast(tmp_path, monkeypatch, capsys, argv, expected)


@pytest.mark.parametrize(
    "argv",
    [["--scheduler", "hyperband"], ["--seeds", "two"], ["--max-concurrent", "1.5"], ["--cpus-per-trial", "x"], ["--precision", "fp16"]],
)
def test_badly_typed_options_exit_2_through_argparse(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_more_cpus_per_trial_than_the_local_ray_has_is_refused(tmp_path, monkeypatch, capsys):
    """Such trials would wait for resources forever; Ray starts to find out, and is shut down again."""
    refused_fast(tmp_path, monkeypatch, capsys, ["--space", "smoke", "--cpus-per-trial", "4096"], "--cpus-per-trial=4096", within_s=120)


def test_list_spaces_shows_each_description(capsys):
    assert cli.main(["--list-spaces"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == available_spaces() and "smoke" in available_spaces()
    assert any("install check" in line for line in lines)


# ---------------------------------------------------------------- the summary, from a real store


def _summary_store(tmp_path):
    """A sweep's parent run in a real MLflow store, and a function that adds one finished (or not) trial to it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "t", uri)
    parent = start_sweep_run(client, experiment, "s", {}, {})
    target = TrackingTarget(uri, experiment, parent)

    def child(config: TrialConfig, status: str, acc: float | None = None, **tags: str) -> str:
        """One trial's run as the trainable leaves it: named as the config, its params, its metric."""
        run = client.create_run(experiment, run_name=config.name, tags={"mlflow.parentRunId": parent, **tags})
        for key, value in config.to_dict().items():
            client.log_param(run.info.run_id, key, str(value))
        if acc is not None:
            client.log_metric(run.info.run_id, "probe/latent/mlp_acc", acc)
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    return target, child


def test_summary_sorts_k_as_numbers_and_lists_each_trial_that_did_not_finish(tmp_path):
    target, child = _summary_store(tmp_path)
    uri = target.uri

    def vq(k: int, seed: int) -> TrialConfig:
        return TrialConfig(model="vqvae", dataset="digits", num_codes=k, seed=seed)

    for k in (256, 16, 64):
        child(vq(k, 0), "FINISHED", 0.5)
        child(vq(k, 1), "FINISHED", 0.7)
    child(TrialConfig(model="vae", dataset="digits", seed=0), "FINISHED", 0.9)
    child(vq(16, 2), "FINISHED", None, **{STOPPED_TAG: "2"})
    failed = child(vq(64, 2), "FAILED", None, **{"vqbench.error": "DataError: labels outside 0..9"})
    child(vq(256, 2), "FAILED", None, **{"vqbench.error": "TrialDiverged: loss became nan in epoch 1"})

    outcome = read_outcome(target, interrupted=False)
    text = render(outcome, "s", 12.0, target, "t", "python -m benchmark.sweep --resume s")
    lines = text.splitlines()
    table = [line.split() for line in lines if line.strip().startswith(("vae-digits", "vqvae-digits"))]
    assert [row[0] for row in table] == ["vae-digits-D64-kl0.01", *(f"vqvae-digits-K{k}-D64-b0.25" for k in (16, 64, 256))]
    assert table[1][1:4] == ["0.6000", "±", "0.1414"] and "1" in table[1][-3:]  # mean ± sd over the 2 finished seeds
    header = lines.index(next(line for line in lines if line.strip().startswith("setting")))
    assert "mean ± sd over the n finished trials" in lines[header - 1] and "not a confidence interval" in lines[header - 1]
    assert lines[0] == "sweep s ended after 12 s: 7 finished, 1 stopped early, 1 diverged, 1 failed"
    assert any(f"failed vqvae-digits-K64-D64-b0.25-s2: DataError: labels outside 0..9 (run {failed})" in line for line in lines)
    assert any("diverged vqvae-digits-K256-D64-b0.25-s2: TrialDiverged" in line for line in lines)
    assert "so the sweep exits 1" in lines[-1] and f"python -m analysis.report --experiment t --tracking-uri {uri}" in lines[-1]
    assert outcome.exit_code == 1
    assert read_outcome(target, interrupted=True).exit_code == 130


def test_summary_never_pools_settings_that_share_a_k(tmp_path):
    """Quantizer arms at one K, and the VAE at two KL weights, are rows of their own; FSQ's row is its 1,000 codes."""
    target, child = _summary_store(tmp_path)
    configs = [
        TrialConfig(model="vqvae", dataset="digits", num_codes=512, quantizer="plain"),
        TrialConfig(model="vqvae", dataset="digits", num_codes=512, quantizer="ema"),
        TrialConfig(model="vqvae", dataset="digits", num_codes=512, quantizer="fsq"),
        TrialConfig(model="vae", dataset="digits", kl_weight=0.01),
        TrialConfig(model="vae", dataset="digits", kl_weight=1.0),
    ]
    for i, config in enumerate(configs):
        for seed in (0, 1):
            child(replace(config, seed=seed), "FINISHED", 0.5 + 0.1 * i)
    outcome = read_outcome(target, interrupted=False)
    found = summary_table(outcome)
    assert list(found["setting"]) == [
        "vae-digits-D64-kl0.01",
        "vae-digits-D64-kl1",
        "vqvae-digits-K512-D64-b0.25",
        "vqvae-digits-ema-K512-D64-b0.25",
        "vqvae-digits-fsq-K1000-D64",
    ]
    assert list(found["n"]) == [2] * 5
    assert found.set_index("setting").loc["vqvae-digits-ema-K512-D64-b0.25", "probe_acc"] == "0.6000 ± 0.0000"
    assert sorted(outcome.runs["K"].dropna().astype(int).unique()) == [512, 1000]


def test_trials_that_never_opened_a_run_count_as_failed(tmp_path):
    # a trial that dies before its MLflow run opens leaves no child run: the sweep must not exit 0 "0 failed"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "t", uri)
    target = TrackingTarget(uri, experiment, start_sweep_run(client, experiment, "s", {}, {}))
    run = client.create_run(experiment, run_name="one", tags={"mlflow.parentRunId": target.parent_run_id})
    client.set_terminated(run.info.run_id, "FINISHED")
    outcome = read_outcome(target, interrupted=False, planned=3)
    assert outcome.count("failed") == 2 and outcome.exit_code == 1
    lines = render(outcome, "s", 1.0, target, "t", "resume").splitlines()
    assert lines[0] == "sweep s ended after 1 s: 1 finished, 2 failed"
    assert any("2 trial(s) ended before opening an MLflow run" in line for line in lines) and "so the sweep exits 1" in lines[-1]
    assert read_outcome(target, interrupted=False, planned=1).exit_code == 0
    assert read_outcome(target, interrupted=True, planned=3).exit_code == 130


def test_the_driver_ends_stopped_trials_whose_worker_died_before_it_could(tmp_path):
    # Ray Tune tears a stopped trial's worker down without waiting for its thread (unless it reuses the actor), so the
    # trial may never end its run; the driver ends it as stopped early, not as orphaned, and leaves every other run alone
    from ray.tune import Result

    def result(run_id: str | None, epoch: int, error: Exception | None = None, **final: float) -> Result:
        metrics = {EPOCH: epoch, **final, "config": {"trial": {"model": "vae", "dataset": "digits", "epochs": 4}}}
        return Result(metrics={**metrics, MLFLOW_RUN_ID: run_id} if run_id else metrics, checkpoint=None, error=error, path=str(tmp_path))

    results = [
        result("stopped", 2),
        result("finished", 4, **{FAILED: 0.0}),
        result("diverged", 1, **{FAILED: 1.0}),
        result("crashed", 3, error=RuntimeError("worker died")),
        result(None, 1),
    ]
    assert stopped_early(results) == {"stopped": 2}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "t", uri)
    parent = start_sweep_run(client, experiment, "s", {}, {})

    def child(status: str) -> str:
        run_id = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
        if status != "RUNNING":
            client.set_terminated(run_id, status)
        return run_id

    left, ended, killed = child("RUNNING"), child("FINISHED"), child("KILLED")
    assert close_stopped(client, parent, {left: 2, ended: 3, killed: 1}) == 1
    assert client.get_run(left).info.status == "FINISHED" and client.get_run(left).data.tags[STOPPED_TAG] == "2"
    assert STOPPED_TAG not in client.get_run(ended).data.tags and client.get_run(killed).info.status == "KILLED"
    mark_interrupted(uri, parent)  # a Ctrl-C'd sweep's stopped trials are interrupted, for --resume to continue
    interrupted = child("RUNNING")
    assert close_stopped(client, parent, {interrupted: 1}) == 1
    assert client.get_run(interrupted).info.status == "KILLED" and ERROR_TAG in client.get_run(interrupted).data.tags


# ---------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_asha_stopped_trials_end_as_stopped_not_failed(tmp_path, local_ray, capsys):
    space = tmp_path / "asha_space.py"
    space.write_text(
        "from ray import tune\nfrom benchmark.space import Study\n"
        "def studies(options):\n"
        "    base = {'model': 'vae', 'dataset': 'digits', 'epochs': 4}\n"
        "    return [Study('asha', base=base, search={'kl_weight': tune.loguniform(1e-4, 10.0)}, num_samples=6)]\n"
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
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    client = MlflowClient(uri)
    runs = [r for rs in runs_by_config(client, "t").values() for r in rs]
    assert len(runs) == 6
    stopped = [r for r in runs if STOPPED_TAG in r.data.tags]
    assert stopped and len(stopped) < 6, "ASHA stopped no trial, or every trial"
    for run in runs:
        assert run.info.status == "FINISHED" and "vqbench.error" not in run.data.tags
    for run in stopped:
        epoch = int(run.data.tags[STOPPED_TAG])
        assert 1 <= epoch < 4 and [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == list(range(1, epoch + 1))
        assert "probe/latent/mlp_acc" not in run.data.metrics
    summary_line = next(line for line in out.splitlines() if line.startswith("sweep asha_space-") and " ended after " in line)
    assert f"{6 - len(stopped)} finished, {len(stopped)} stopped early" in summary_line and "failed" not in summary_line
    parent = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`vqbench.role` = 'sweep'")[0]
    assert parent.data.metrics["trials_stopped_early"] == len(stopped) and parent.data.metrics["trials_failed"] == 0
    assert parent.data.params["studies"] == "asha:asha:6 samples"
    assert (tmp_path / "ray" / parent.info.run_name / "asha").is_dir()  # a space file's sweep lives under --storage-path


@pytest.mark.slow
def test_deterministic_trial_error_fails_once_and_is_not_retried(tmp_path, local_ray, capsys):
    """Labels outside 0..9 pass the header checks; the trial's full read finds them, every time it would try."""
    write_idx_dataset(tmp_path / "data", "MNIST", n_train=40, n_test=12)
    labels = np.full(40, 12, dtype=np.uint8)
    write_idx(tmp_path / "data" / "MNIST" / "raw" / IDX_NAMES[("train", "labels")], labels, LABEL_MAGIC)
    space = write_space(tmp_path, [{"model": "vae", "dataset": "mnist", "epochs": 1}, {"model": "vae", "dataset": "digits", "epochs": 1}])
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
            "--data-dir",
            str(tmp_path / "data"),
            "--max-failures",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1
    runs = runs_by_config(MlflowClient(uri), "t")
    by_dataset = {rs[0].data.params["dataset"]: rs for rs in runs.values()}
    (bad,) = by_dataset["mnist"]
    assert (
        bad.info.status == "FAILED"
        and bad.data.tags["vqbench.error"].startswith("DataError:")
        and "outside 0..9" in bad.data.tags["vqbench.error"]
    )
    assert "vqbench.resumed" not in bad.data.tags, "the deterministic failure was retried"
    assert [r.info.status for r in by_dataset["digits"]] == ["FINISHED"]
    lines = out.strip().splitlines()
    assert any(line.strip().startswith(f"failed {bad.info.run_name}: DataError") and bad.info.run_id in line for line in lines)
    assert lines[-1].startswith("1 trial(s) failed") and "exits 1" in lines[-1]


@pytest.mark.slow
def test_crash_before_the_first_checkpoint_keeps_one_run_per_config(tmp_path, monkeypatch):
    """A worker dying after logging epoch 1, every attempt: each retry reopens the same run and never logs epoch 1 twice."""
    import ray

    from benchmark.fault_injection import FAULT_MODE_ENV

    monkeypatch.setenv(FAULT_MODE_ENV, "exit-before-checkpoint")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        space = write_space(tmp_path, [{"model": "vae", "dataset": "digits", "epochs": 2, "fail_at_epoch": 1}])
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
                "--max-failures",
                "1",
            ]
        )
    finally:
        ray.shutdown()
    assert rc == 1
    client = MlflowClient(uri)
    (runs,) = runs_by_config(client, "t").values()
    assert len(runs) == 1, "a retry opened a second run for the same config"
    (run,) = runs
    assert run.info.status == "KILLED" and run.data.tags.get("vqbench.resumed") == "true"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1]


def test_the_first_sigint_reaches_ray_tune_only_after_the_sweep_is_marked(tmp_path):
    """Tune's handler stops the trials, and each reads the mark as it ends: the mark must be in MLflow first."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "t", uri)
    parent = start_sweep_run(client, experiment, "sweep", {}, {})
    seen: list[bool] = []

    def tune_handler(signum, frame):  # what Ray Tune's does: set its stop event, give SIGINT back
        seen.append(INTERRUPTED_TAG in client.get_run(parent).data.tags)
        signal.signal(signal.SIGINT, interrupt._second_interrupt)

    marker = pickle.loads(pickle.dumps(interrupt.MarkInterrupt(partial(mark_interrupted, uri, parent))))  # as Tune restores it
    previous = signal.signal(signal.SIGINT, tune_handler)
    try:
        interrupt._held.clear()
        marker.on_step_begin(1, [])
        marker.on_step_end(1, [])
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == [] and interrupt._held, "the signal is held, not handled inside the signal handler"
        assert INTERRUPTED_TAG not in client.get_run(parent).data.tags
        marker.on_step_begin(2, [])  # does not wrap its own holder
        marker.on_step_end(2, [])
        assert seen == [True] and not interrupt._held
        assert signal.getsignal(signal.SIGINT) is interrupt._second_interrupt  # a second Ctrl-C raises at once
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_sigint_mid_sweep_is_killed_and_resume_finishes_each_config_once(tmp_path):
    """Epochs of a few seconds (no per-epoch probe): trials are often between epochs when the signal comes,
    where Ray Tune stops them as its scheduler would; they must still end KILLED, not stopped early."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "ray"
    driver = sweep_process(
        tmp_path,
        "--space",
        "quick",
        "--seeds",
        "1",
        "--epochs",
        "8",
        "--train-probe-every",
        "0",
        "--tracking-uri",
        uri,
        "--experiment",
        "t",
        "--name",
        "k",
        "--storage-path",
        str(storage),
        log="interrupted.log",
    )
    try:
        wait_for_sweep_start(storage, "k", driver)
        client = MlflowClient(uri)
        # a trial half-way: it still has seconds of training ahead when the signal comes
        wait_for(
            lambda: (s := finished_steps(client, "t")) and ("FINISHED", 8) in s and any(st == "RUNNING" and 1 <= n <= 4 for st, n in s),
            600,
            "a finished trial and one mid-training",
        )
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=300) == 130, (tmp_path / "interrupted.log").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    log = (tmp_path / "interrupted.log").read_text()
    last = log.strip().splitlines()[-1]
    assert last.startswith("interrupted with ") and f"python -m benchmark.sweep --resume k --storage-path {storage}" in last
    assert "Tuner.restore" not in log
    experiment = client.get_experiment_by_name("t").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")
    assert parent.info.status == "KILLED" and parent.data.tags[INTERRUPTED_TAG] == "true"
    statuses = [r.info.status for rs in runs_by_config(client, "t").values() for r in rs]
    assert "FINISHED" in statuses and "KILLED" in statuses and "RUNNING" not in statuses and "FAILED" not in statuses
    for rs in runs_by_config(client, "t").values():
        for r in rs:
            assert STOPPED_TAG not in r.data.tags, "an interrupted trial was reported as stopped early"

    resumed = sweep_process(tmp_path, "--resume", "k", "--storage-path", str(storage), log="resumed.log")
    assert resumed.wait(timeout=900) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    runs = runs_by_config(client, "t")
    assert len(runs) == 4
    for rs in runs.values():
        assert [r.info.status for r in rs] == ["FINISHED"]
        assert "vqbench.error" not in rs[0].data.tags
        assert [m.step for m in client.get_metric_history(rs[0].info.run_id, "train/loss")] == list(range(1, 9))
    (parent,) = client.search_runs([experiment], "tags.`vqbench.role` = 'sweep'")
    assert parent.info.status == "FINISHED" and INTERRUPTED_TAG not in parent.data.tags  # its trials may stop early again
