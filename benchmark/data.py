"""Datasets by name, read once into memory as uint8 tensors (N, C, 32, 32).

MNIST and Fashion-MNIST are read by torchvision from its own layout (`<root>/MNIST/raw/...`);
its tensors `.data`/`.targets` are taken whole, never through per-sample `__getitem__`.
CIFAR pickles are read directly: torchvision's CIFAR classes refuse any file whose md5
differs from the release and drop CIFAR-100's 20 coarse labels, which Figure 3 needs;
`--download` still fetches and checks them through torchvision.

Any other name is an image folder (`benchmark.image_folder`): `<data root>/<name>/` or an
absolute path, holding `train/<class>/` and `test/<class>/` image files.

Every image is brought to 32x32, the input of the paper's three stride-2 convolutions:
28x28 images are zero-padded by 2 pixels on each side (the LeNet convention, which keeps
every pixel), 8x8 digits are upsampled 4x bilinearly (values 0..16 are rescaled to 0..255),
image folders of another square size are resized bilinearly.

Where the files are and whether they are there is `benchmark.data_files`: it runs before any image is read.

Every dataset carries a card (`DatasetCard`): its name, root, content hash, classes, image counts
and a provenance note, which every run trained on it records.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.config import dataset_label, normalise_dataset
from benchmark.data_files import (
    CIFAR_FILES,
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    NUM_CLASSES,
    TORCHVISION_FOLDER,
    DataError,
    check_available,
    fetch,
    image_folder_root,
    is_image_folder,
    required_files,
    resolve_data_dir,
)
from benchmark.image_folder import ImageFolderError, load_image_folder, read_note, update_digest

REFETCH = "Delete it and fetch it again with --download."
NOTES = {
    "digits": "scikit-learn's embedded 8x8 digits, upsampled to 32x32 bilinearly; a fixed 75/25 stratified split",
    "mnist": "MNIST, torchvision's IDX files, zero-padded from 28x28 to 32x32",
    "fashion_mnist": "Fashion-MNIST, torchvision's IDX files, zero-padded from 28x28 to 32x32",
    "cifar10": "CIFAR-10, the release's python pickles",
    "cifar100": "CIFAR-100, the release's python pickles (100 fine classes; the 20 superclasses for Figure 3)",
}


@dataclass(frozen=True)
class DatasetCard:
    """A dataset's identity, recorded by every run trained on it, so that a table names what it measured."""

    name: str
    root: str
    content_hash: str  # SHA-256 of the files read (path and bytes of each); of the arrays for the embedded digits
    class_names: tuple[str, ...]
    channels: int
    train_images: int
    test_images: int
    note: str

    def tags(self) -> dict[str, str]:
        return {
            "dataset.name": self.name,
            "dataset.root": self.root,
            "dataset.hash": self.content_hash,
            "dataset.note": self.note,
            "dataset.classes": str(len(self.class_names)),
            "dataset.class_names": ",".join(self.class_names)[:4000],
            "dataset.channels": str(self.channels),
            "dataset.train_images": str(self.train_images),
            "dataset.test_images": str(self.test_images),
        }


@dataclass(frozen=True)
class Dataset:
    name: str
    train_x: torch.Tensor  # uint8 (N, C, 32, 32)
    train_y: torch.Tensor  # int64 (N,)
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    # CIFAR-100's 20 superclasses; None elsewhere. Figure 3 colours CIFAR-100 by them.
    train_coarse: torch.Tensor | None = None
    test_coarse: torch.Tensor | None = None
    card: DatasetCard | None = None

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    def plot_labels(self) -> torch.Tensor:
        return self.test_coarse if self.test_coarse is not None else self.test_y


def check_readable(name: str, data_dir: str | os.PathLike | None) -> None:
    """What a sweep checks before Ray starts, in well under a second for MNIST: every file present,
    IDX headers consistent with the file sizes and label counts with image counts, CIFAR pickles
    holding their keys with matching lengths. A broken file fails here once, not in every trial."""
    check_available(name, data_dir)
    root = resolve_data_dir(data_dir)
    if is_image_folder(name):
        _read_folder(name, data_dir)  # decodes once and fills this machine's cache, which every trial here then reads
    elif name in TORCHVISION_FOLDER:
        raw = root / TORCHVISION_FOLDER[name] / "raw"
        for prefix in ("train", "t10k"):
            image_file, label_file = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
            images, labels = _idx_shape(image_file, 3), _idx_shape(label_file, 1)
            if images[1:] != (28, 28):
                raise DataError(f"{image_file} holds images of {images[1]}x{images[2]} pixels; expected 28x28. {REFETCH}")
            if labels[0] != images[0]:
                raise DataError(f"{image_file} holds {images[0]} images but {label_file} holds {labels[0]} labels. {REFETCH}")
    elif name in CIFAR_FILES:
        folder, files = CIFAR_FILES[name]
        fine_key = "labels" if name == "cifar10" else "fine_labels"
        for file in files:
            _read_cifar_pickle(root / folder / file, fine_key, name == "cifar100")


def _idx_shape(path: Path, ndim: int) -> tuple[int, ...]:
    """An IDX file's dimensions from its header, checked against its magic and its size on disk."""
    with open(path, "rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 or header[:3] != b"\x00\x00\x08" or header[3] != ndim or len(header) < 4 + 4 * ndim:
        raise DataError(f"{path} is not a {ndim}-D uint8 IDX file (bad header). {REFETCH}")
    shape = struct.unpack(f">{ndim}I", header[4:])
    expected = 4 + 4 * ndim + math.prod(shape)
    size = path.stat().st_size
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise DataError(f"{path} is {what}: {size} bytes where its header {shape} needs {expected}. {REFETCH}")
    return shape


@lru_cache(maxsize=4)
def load_dataset(name: str, data_dir: str | None = None, download: bool = False) -> Dataset:
    """Read a dataset once per process; a reused Ray actor does not read it again."""
    if download:
        fetch(name, data_dir)
    check_available(name, data_dir)
    root = resolve_data_dir(data_dir)
    if is_image_folder(name):
        return _load_folder(name, data_dir)
    if name == "digits":
        ds = _load_digits()
        digest = hashlib.sha256()
        for array in (ds.train_x, ds.train_y, ds.test_x, ds.test_y):
            digest.update(array.numpy().tobytes())
        return _with_card(ds, "sklearn.datasets.load_digits", digest.hexdigest())
    ds = _load_idx(name, root) if name in TORCHVISION_FOLDER else _load_cifar(name, root)
    return _with_card(ds, str(root), _hash_files(root, required_files(name, root)))


def _hash_files(root: Path, paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        update_digest(digest, path.relative_to(root).as_posix(), path.read_bytes())
    return digest.hexdigest()


def _with_card(ds: Dataset, root: str, content_hash: str) -> Dataset:
    names = tuple(str(c) for c in range(ds.num_classes))
    card = DatasetCard(ds.name, root, content_hash, names, ds.channels, len(ds.train_y), len(ds.test_y), NOTES[ds.name])
    return Dataset(ds.name, ds.train_x, ds.train_y, ds.test_x, ds.test_y, ds.num_classes, ds.train_coarse, ds.test_coarse, card)


def _read_folder(name: str, data_dir: str | os.PathLike | None):
    try:
        return load_image_folder(image_folder_root(name, data_dir))
    except ImageFolderError as err:
        raise DataError(str(err)) from None


def _load_folder(name: str, data_dir: str | os.PathLike | None) -> Dataset:
    root = image_folder_root(name, data_dir)
    found = _read_folder(name, data_dir)
    try:
        note = read_note(root, found.content_hash)
    except ImageFolderError as err:
        raise DataError(str(err)) from None
    label = dataset_label(name)
    card = DatasetCard(
        label, str(root), found.content_hash, found.classes, found.train_x.shape[1], len(found.train_y), len(found.test_y), note
    )
    tensors = [torch.from_numpy(a) for a in (found.train_x, found.train_y, found.test_x, found.test_y)]
    return Dataset(label, *tensors, len(found.classes), card=card)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    images, labels = load_digits(return_X_y=True)
    pixels = torch.from_numpy(images.reshape(-1, 1, 8, 8) * (255.0 / 16.0)).float()
    big = F.interpolate(pixels, size=(32, 32), mode="bilinear", align_corners=False)
    big = big.round().clamp(0, 255).to(torch.uint8)
    # A fixed split, the same for every seed, so seeds vary the model and not the data.
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=0.25, random_state=0, stratify=labels)
    y = torch.from_numpy(labels).long()
    return Dataset("digits", big[train_idx], y[train_idx], big[test_idx], y[test_idx], 10)


def _load_idx(name: str, root: Path) -> Dataset:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = root / TORCHVISION_FOLDER[name] / "raw"
    splits = []
    for prefix in ("train", "t10k"):
        # torchvision's own IDX readers, one file at a time, so an error names the broken file.
        image_file, label_file = raw / f"{prefix}-images-idx3-ubyte", raw / f"{prefix}-labels-idx1-ubyte"
        images, labels = _read_idx(read_image_file, image_file), _read_idx(read_label_file, label_file)
        if images.dtype != torch.uint8 or images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
            raise DataError(f"{image_file} holds shape {tuple(images.shape)} {images.dtype}; expected (N, 28, 28) uint8")
        if labels.shape != (images.shape[0],):
            raise DataError(f"{image_file} holds {images.shape[0]} images but {label_file} holds {labels.numel()} labels")
        if labels.numel() and (labels.min() < 0 or labels.max() > 9):
            raise DataError(f"{label_file} holds labels outside 0..9")
        splits.append((F.pad(images, (2, 2, 2, 2)).unsqueeze(1).contiguous(), labels.long()))
    (train_x, train_y), (test_x, test_y) = splits
    return Dataset(name, train_x, train_y, test_x, test_y, 10)


def _read_idx(reader, path: Path) -> torch.Tensor:
    try:
        return reader(str(path))
    except Exception as err:  # torchvision's IDX reader fails with bare asserts
        raise DataError(
            f"cannot read {path}: the file is truncated or not an IDX file ({type(err).__name__}: {err}). "
            "Delete it and fetch it again with --download."
        ) from err


def _load_cifar(name: str, root: Path) -> Dataset:
    folder, files = CIFAR_FILES[name]
    fine_key = "labels" if name == "cifar10" else "fine_labels"
    train_files = [f for f in files if f.startswith("data_batch") or f == "train"]
    test_files = ["test_batch" if name == "cifar10" else "test"]
    train = [_read_cifar_pickle(root / folder / f, fine_key, name == "cifar100") for f in train_files]
    test = _read_cifar_pickle(root / folder / test_files[0], fine_key, name == "cifar100")
    train_x, train_y, train_coarse = (torch.cat(part) if part[0] is not None else None for part in zip(*train))
    num_classes = NUM_CLASSES[name]
    ds = Dataset(name, train_x, train_y, test[0], test[1], num_classes, train_coarse, test[2])
    for split, labels in (("train", ds.train_y), ("test", ds.test_y)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
            raise DataError(f"{root / folder}: {split} labels fall outside 0..{num_classes - 1}")
    return ds


def _read_cifar_pickle(path: Path, fine_key: str, coarse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as err:
        raise DataError(f"cannot read {path}: not a CIFAR python pickle ({type(err).__name__}: {err})") from err
    needed = ["data", fine_key] + (["coarse_labels"] if coarse else [])
    missing = [k for k in needed if not isinstance(entry, dict) or k not in entry]
    if missing:
        raise DataError(f"{path} lacks the key(s) {missing}: it is not a {fine_key.split('_')[0]} CIFAR batch file")
    data = np.asarray(entry["data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(entry[fine_key]) != data.shape[0]:
        raise DataError(f"{path} holds data of shape {data.shape} with {len(entry[fine_key])} labels; expected (N, 3072) and N labels")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    coarse_labels = torch.tensor(entry["coarse_labels"], dtype=torch.long) if coarse else None
    return images, torch.tensor(entry[fine_key], dtype=torch.long), coarse_labels


def main(argv: list[str] | None = None) -> int:
    """Fetch (with --download) and check datasets, e.g. once per node of a cluster."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m benchmark.data", description=main.__doc__)
    parser.add_argument(
        "datasets", nargs="+", help=f"any of {', '.join(NUM_CLASSES)}, or an image folder (its name inside the data root, or a path)"
    )
    parser.add_argument(
        "--data-dir", default=None, help=f"data root in torchvision's layout (default: ${DATA_DIR_ENV} or {DEFAULT_DATA_DIR})"
    )
    parser.add_argument("--download", action="store_true", help="fetch what is missing through torchvision (needs internet)")
    args = parser.parse_args(argv)
    try:
        for name in args.datasets:
            ds = load_dataset(normalise_dataset(name), args.data_dir, args.download)
            print(
                f"{ds.name}: train {tuple(ds.train_x.shape)}, test {tuple(ds.test_x.shape)}, {ds.num_classes} classes, "
                f"in {ds.card.root}, sha256 {ds.card.content_hash[:16]}" + (f"; {ds.card.note}" if ds.card.note else "")
            )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
