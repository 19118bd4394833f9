"""The built-in datasets' names and files, the data root, and whether a dataset is there to read.

Everything here runs before an image is read (preflight, the dry run, a sweep's plan), so it imports neither torch
nor Ray: `benchmark.data` reads the files this module finds; torchvision is imported only to download.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmark.config import dataset_label
from benchmark.error_text import first_line

DATA_DIR_ENV = "VQBENCH_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/vqbench/data"

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")),
    "cifar100": ("cifar-100-python", ("train", "test")),
}
TORCHVISION_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
NUM_CLASSES = {"digits": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100}
CHANNELS = {"digits": 1, "mnist": 1, "fashion_mnist": 1, "cifar10": 3, "cifar100": 3}  # what a reloaded model is built for


class DataError(RuntimeError):
    """A dataset is missing or unreadable: the message names the file and the fix."""


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """`--data-dir`, else $VQBENCH_DATA_DIR, else ~/.cache/vqbench/data; always absolute."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def is_image_folder(name: str) -> bool:
    return name not in NUM_CLASSES


def image_folder_root(name: str, data_dir: str | os.PathLike | None) -> Path:
    """An absolute path as it is; a folder name inside the data root."""
    return Path(name) if os.path.isabs(name) else resolve_data_dir(data_dir) / name


def required_files(name: str, root: Path) -> list[Path]:
    if name in TORCHVISION_FOLDER:
        return [root / TORCHVISION_FOLDER[name] / "raw" / f for f in IDX_FILES]
    if name in CIFAR_FILES:
        folder, files = CIFAR_FILES[name]
        return [root / folder / f for f in files]
    return []


def missing_files(name: str, root: Path) -> list[Path]:
    return [p for p in required_files(name, root) if not p.is_file()]


def fetch_command(name: str, root: Path) -> str:
    return f"python -m benchmark.data {name} --data-dir {root} --download"


def check_data_dir(data_dir: str | os.PathLike | None) -> None:
    """A data root that is a file cannot hold a dataset, nor receive a download."""
    if data_dir is not None and not str(data_dir).strip():
        raise DataError("--data-dir is empty: pass the data root folder (torchvision's layout), or leave it out for the default")
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataError(f"--data-dir {root} is a file: pass the data root folder (torchvision's layout)")


def check_available(name: str, data_dir: str | os.PathLike | None, download: bool = False) -> None:
    """Fail before any work starts when a dataset's files are absent and cannot be fetched."""
    check_data_dir(data_dir)
    if is_image_folder(name):
        folder = image_folder_root(name, data_dir)
        if not folder.is_dir():
            raise DataError(
                f"dataset {name!r} is neither built in ({', '.join(NUM_CLASSES)}) nor an image folder: {folder} does not exist. "
                f"Pass --data-dir (or ${DATA_DIR_ENV}) naming the folder that holds {dataset_label(name)}/, or the folder's absolute path"
            )
        return
    root = resolve_data_dir(data_dir)
    missing = missing_files(name, root)
    if missing and not download:
        folder = missing[0].parent
        raise DataError(
            f"dataset {name!r} is not in {folder}: expected files {', '.join(p.name for p in missing)}. "
            f"Fetch it with `{fetch_command(name, root)}`, "
            f"or pass --data-dir pointing at a folder in torchvision's layout that holds it."
        )


def fetch(name: str, data_dir: str | os.PathLike | None) -> None:
    """Download a dataset through torchvision once, in the calling process; one clear error offline."""
    if name not in TORCHVISION_FOLDER and name not in CIFAR_FILES:
        return
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}[
        name
    ]
    root = resolve_data_dir(data_dir)
    try:
        for train in (True, False):
            cls(str(root), train=train, download=True)
    except Exception as err:  # URLError, RuntimeError("Error downloading ..."), a failed md5 check
        reason = first_line(err)
        raise DataError(
            f"cannot download {name} into {root} ({type(err).__name__}: {reason}): check the internet connection, "
            f"or fetch it on another machine and pass --data-dir pointing at a copy in torchvision's layout"
        ) from None
