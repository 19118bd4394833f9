"""What made a run: the code's commit (vqbench's tag and MLflow's own) and the versions of the packages that matter."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "torchvision", "ray", "mlflow", "optuna", "scikit-learn", "scikit-image", "numpy")


def read_git_commit(folder: Path) -> str:
    """HEAD of the checkout holding `folder`, with "-dirty" when tracked files differ from it; "unknown" outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=folder).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        return f"{commit}-dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else commit or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# Read once, when this process imports the code: a reused Ray actor keeps running what it imported
# even if the checkout moves on, and its runs must name that version, not the checkout's later HEAD.
GIT_COMMIT = read_git_commit(Path(__file__).parent)
# MLflow's own tag, which its UI shows as the run's source version: the bare commit, where there is one.
SOURCE_TAGS = {"mlflow.source.git.commit": GIT_COMMIT.removesuffix("-dirty")} if GIT_COMMIT != "unknown" else {}


@functools.cache
def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "absent"
    return versions
