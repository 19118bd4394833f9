"""Shared fixtures. Real MNIST/Fashion-MNIST live in ../shared/data beside the checkout (CI has it)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("VQBENCH_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data root; tests that need it skip, saying why, where it is absent."""
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"real MNIST not found under {SHARED_DATA} (set VQBENCH_SHARED_DATA to a torchvision data root)")
    return SHARED_DATA
