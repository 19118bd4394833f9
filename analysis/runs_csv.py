"""Runs CSVs (`python -m analysis.export`): written from a runs frame, read back into the same frame, checked on the way in.

A CSV carries no artifacts and needs no MLflow store: the committed results are rebuilt from them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.run_columns import CONFIG_TYPES, CSV_COLUMNS, STATUSES, typed_runs
from analysis.runs import RunsError
from benchmark.config import MODELS
from benchmark.error_text import first_line


def read_runs_csv(paths: list[Path]) -> pd.DataFrame:
    """The frame `load_runs` returns, rebuilt from runs CSVs (`python -m analysis.export`); no MLflow store needed."""
    frames = []
    for path in paths:
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise RunsError(
                f"cannot read runs CSV {path} ({type(err).__name__}: {first_line(err, 300)}): pass a file written by `python -m analysis.export`"
            ) from None
        check_runs_csv(frame, path)
        frames.append(frame)
    if not frames:
        raise RunsError("no runs CSV given: pass --runs FILE.csv [FILE.csv ...]")
    frame = pd.concat(frames, ignore_index=True)
    duplicated = frame["run_id"].duplicated()
    if duplicated.any():
        raise RunsError(
            f"run {frame.loc[duplicated, 'run_id'].iloc[0]} appears in more than one row of the runs CSVs: pass each export once"
        )
    return typed_runs(frame)


def check_runs_csv(frame: pd.DataFrame, path: Path) -> None:
    """Every column the analysis reads, and values it can use: a hand-edited or foreign CSV fails here, not as a traceback."""
    missing = [c for c in CSV_COLUMNS if c not in frame]
    if missing:
        raise RunsError(
            f"{path} is not a runs CSV: it lacks the column(s) {', '.join(missing)}; write one with `python -m analysis.export`"
        )
    blank = frame["dataset"].notna() & (frame["dataset"].astype(str).str.strip() == "")
    if blank.any():
        raise RunsError(f"{path}: run {frame.loc[blank, 'run_id'].iloc[0]} has an empty dataset name; fix the row or export the runs again")
    for column, allowed in (("model", MODELS), ("status", STATUSES)):  # any dataset name: image folders name their own
        bad = frame[column].notna() & ~frame[column].isin(allowed)
        if bad.any():
            raise RunsError(
                f"{path}: run {frame.loc[bad, 'run_id'].iloc[0]} has {column}={frame.loc[bad, column].iloc[0]!r}; "
                f"allowed: {', '.join(allowed)}. Fix the row or export the runs again"
            )
    numeric = [c for c, kind in CONFIG_TYPES.items() if kind in ("int", "float") and c in frame] + [c for c in frame.columns if "/" in c]
    for column in numeric:
        bad = frame[column].notna() & pd.to_numeric(frame[column], errors="coerce").isna()
        if bad.any():
            raise RunsError(
                f"{path}: run {frame.loc[bad, 'run_id'].iloc[0]} has {column}={frame.loc[bad, column].iloc[0]!r}, not a number; "
                "fix the row or export the runs again"
            )


def write_runs_csv(runs: pd.DataFrame, path: Path) -> None:
    """One row per trial run: config, status, every final metric, run id; times as epoch milliseconds (exact round trip)."""
    out = runs.copy()
    for column in ("start_time", "end_time"):
        out[column] = pd.array([None if pd.isna(t) else t.value // 10**6 for t in out[column]], dtype="Int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
