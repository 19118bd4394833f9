"""Where a command will write, checked before any work: a bad --out or --figures fails in a second, not after the run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def folder_problem(folder: Path) -> str | None:
    """Why `folder` cannot be created and written (None if it can): it or a parent is a file, or the
    nearest existing parent is not writable."""
    folder = folder.expanduser().resolve()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def file_problem(path: Path) -> str | None:
    """Why a file cannot be written at `path` (None if it can)."""
    if path.expanduser().is_dir():
        return f"{path} is a folder"
    return folder_problem(path.expanduser().resolve().parent)


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> OSError | None:
    """`write` fills a temporary file beside `path`, which then replaces it: the file appears whole or not
    at all. Returns the error instead of raising, for caches, where a file that cannot be written costs time."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(tmp, path)
        return None
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return err
