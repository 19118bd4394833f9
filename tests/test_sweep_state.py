"""What --resume reads: the state file (absolute paths, so the printed resume command works from any folder) and Ray's."""

from __future__ import annotations

import json
import sys

import pytest

from benchmark.config import ConfigError
from benchmark.sweep import cli
from benchmark.sweep.runner import restore_tuner
from benchmark.sweep.state import SWEEP_FILE, read_state, resumed_args, write_state
from benchmark.tracking.store import TrackingTarget

TARGET = TrackingTarget("sqlite:////abs/mlflow.db", "1", "parent")


def test_resume_from_another_folder_finds_the_space_data_and_storage_the_sweep_started_with(tmp_path, monkeypatch):
    started, elsewhere = tmp_path / "started", tmp_path / "elsewhere"
    started.mkdir()
    elsewhere.mkdir()
    (started / "my_space.py").write_text("")
    monkeypatch.chdir(started)
    args = cli.parse_args(["--space", "my_space.py", "--storage-path", "rr", "--data-dir", "data", "--name", "s", "--epochs", "3"])
    (started / "rr" / "s").mkdir(parents=True)
    write_state(started / "rr" / "s", TARGET, args)

    monkeypatch.chdir(elsewhere)
    resumed = resumed_args(cli.parse_args(["--resume", "s", "--storage-path", str(started / "rr")]), cli.parse_args([]))
    assert resumed.space == str(started / "my_space.py") and resumed.data_dir == str(started / "data")
    assert resumed.storage_path == str(started / "rr") and resumed.epochs == 3 and resumed.resume == "s"
    assert read_state(started / "rr" / "s")[0] == TARGET


def test_resume_refuses_options_it_would_ignore():
    given = cli.parse_args(["--resume", "s", "--tracking-uri", "sqlite:////other.db", "--verbose", "--address", "auto"])
    with pytest.raises(ConfigError, match="leave out --tracking-uri \\(to change them, start a new sweep\\)"):
        resumed_args(given, cli.parse_args([]))


@pytest.mark.parametrize("content", ["", "{", json.dumps({"tracking": {}}), json.dumps({"args": {}}), json.dumps([1])])
def test_a_damaged_state_file_is_bad_input(tmp_path, content):
    (tmp_path / SWEEP_FILE).write_text(content)
    with pytest.raises(ConfigError, match="is damaged"):
        read_state(tmp_path)


def test_ray_state_that_names_a_module_no_longer_there_is_one_clear_error(tmp_path, monkeypatch):
    """A sweep started before a module moved (its Tuner pickles the callbacks by module path): --resume says which
    version to resume it with, instead of Ray's bare ModuleNotFoundError. The same state restores while the module exists."""
    from ray import tune

    (tmp_path / "moved_progress.py").write_text("from ray.tune import Callback\n\n\nclass Progress(Callback):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from moved_progress import Progress

    def trainable(config):
        tune.report({"x": 1})

    run_config = tune.RunConfig(storage_path=str(tmp_path / "ray"), name="old", callbacks=[Progress()])
    tune.Tuner(trainable, param_space={"a": tune.grid_search([1])}, run_config=run_config)  # writes tuner.pkl
    folder = str(tmp_path / "ray" / "old")
    assert restore_tuner(folder, trainable) is not None

    (tmp_path / "moved_progress.py").unlink()
    monkeypatch.delitem(sys.modules, "moved_progress")
    with pytest.raises(ConfigError) as err:
        restore_tuner(folder, trainable)
    message = str(err.value)
    assert "No module named 'moved_progress'" in message and "another version of vqbench" in message
    assert "vqbench.git_commit" in message and "new --name" in message
