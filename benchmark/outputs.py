"""Where a command will write, checked before any work: a bad --out or --figures fails in a second, not after the run."""

from __future__ import annotations

import os
from pathlib import Path


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
