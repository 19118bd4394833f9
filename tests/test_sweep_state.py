"""The state file --resume reads: absolute paths, so the printed resume command works from any folder."""

from __future__ import annotations

import json

import pytest

from benchmark.config import ConfigError
from benchmark.sweep import cli
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
