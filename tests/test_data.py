"""Dataset loading: real on-disk formats written under tmp_path, the real MNIST files, and errors."""

from __future__ import annotations

import pickle
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import load_dataset
from benchmark.data_files import DATA_DIR_ENV, DataError, check_available, required_files, resolve_data_dir

REPO = Path(__file__).resolve().parents[1]

IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC, LABEL_MAGIC = 0x00000803, 0x00000801


@pytest.fixture(autouse=True)
def _fresh_cache():
    """load_dataset is lru_cached: every test starts from the files it wrote."""
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


# ---------------------------------------------------------------- writers in the real formats


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_idx_dataset(root: Path, folder: str, n_train: int = 30, n_test: int = 12, seed: int = 0) -> dict:
    """torchvision's layout: <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(root / folder / "raw" / IDX_NAMES[(split, "images")], images, IMAGE_MAGIC)
        write_idx(root / folder / "raw" / IDX_NAMES[(split, "labels")], labels, LABEL_MAGIC)
        arrays[split] = (images, labels)
    return arrays


def write_pickle(path: Path, entry: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(entry, f)


def write_cifar10(root: Path, per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        write_pickle(
            root / "cifar-10-batches-py" / name,
            {"batch_label": name, "data": data, "labels": labels, "filenames": [f"{name}_{i}.png" for i in range(n)]},
        )
        batches[name] = (data, labels)
    return batches


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 6, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        coarse = [v // 5 for v in fine]  # any fixed map to 0..19
        write_pickle(
            root / "cifar-100-python" / name,
            {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name, "fine_labels": fine, "coarse_labels": coarse, "data": data},
        )
        splits[name] = (data, fine, coarse)
    write_pickle(
        root / "cifar-100-python" / "meta",
        {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]},
    )
    return splits


def cifar_images(data: np.ndarray) -> np.ndarray:
    """CIFAR rows are 1024 red, then 1024 green, then 1024 blue values, each plane row-major."""
    out = np.empty((data.shape[0], 3, 32, 32), dtype=np.uint8)
    for c in range(3):
        out[:, c] = data[:, c * 1024 : (c + 1) * 1024].reshape(-1, 32, 32)
    return out


# ---------------------------------------------------------------- IDX datasets


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_idx_dataset_is_padded_to_32_and_keeps_every_pixel(tmp_path, name, folder):
    arrays = write_idx_dataset(tmp_path, folder, n_train=30, n_test=12)
    ds = load_dataset(name, str(tmp_path))

    assert ds.name == name and ds.num_classes == 10 and ds.channels == 1
    assert ds.train_coarse is None and ds.test_coarse is None
    for x, y, (images, labels) in ((ds.train_x, ds.train_y, arrays["train"]), (ds.test_x, ds.test_y, arrays["test"])):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
        assert tuple(x.shape) == (len(images), 1, 32, 32)
        assert tuple(y.shape) == (len(images),)
        np.testing.assert_array_equal(x[:, 0, 2:30, 2:30].numpy(), images)  # centre: the original 28x28
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (x[:, 0][:, border] == 0).all()  # 2 zero pixels on each side
        np.testing.assert_array_equal(y.numpy(), labels.astype(np.int64))
    assert torch.equal(ds.plot_labels(), ds.test_y)


def test_mnist_and_fashion_mnist_are_read_from_their_own_folders(tmp_path):
    mnist = write_idx_dataset(tmp_path, "MNIST", seed=1)
    fashion = write_idx_dataset(tmp_path, "FashionMNIST", seed=2)
    a, b = load_dataset("mnist", str(tmp_path)), load_dataset("fashion_mnist", str(tmp_path))
    np.testing.assert_array_equal(a.train_x[:, 0, 2:30, 2:30].numpy(), mnist["train"][0])
    np.testing.assert_array_equal(b.train_x[:, 0, 2:30, 2:30].numpy(), fashion["train"][0])
    assert not torch.equal(a.train_x, b.train_x)


def test_load_dataset_is_cached_per_arguments(tmp_path):
    write_idx_dataset(tmp_path / "one", "MNIST", seed=1)
    write_idx_dataset(tmp_path / "two", "MNIST", seed=2)
    one = load_dataset("mnist", str(tmp_path / "one"))
    assert load_dataset("mnist", str(tmp_path / "one")) is one
    two = load_dataset("mnist", str(tmp_path / "two"))
    assert two is not one and not torch.equal(one.train_x, two.train_x)


# ---------------------------------------------------------------- CIFAR


def test_cifar10_batches_are_concatenated_in_order(tmp_path):
    batches = write_cifar10(tmp_path, per_batch=4, n_test=5)
    ds = load_dataset("cifar10", str(tmp_path))

    assert ds.num_classes == 10 and ds.channels == 3
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert tuple(ds.train_x.shape) == (20, 3, 32, 32) and tuple(ds.test_x.shape) == (5, 3, 32, 32)
    train_data = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_labels = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    np.testing.assert_array_equal(ds.train_x.numpy(), cifar_images(train_data))
    np.testing.assert_array_equal(ds.train_y.numpy(), train_labels)
    np.testing.assert_array_equal(ds.test_x.numpy(), cifar_images(batches["test_batch"][0]))
    np.testing.assert_array_equal(ds.test_y.numpy(), batches["test_batch"][1])
    # one pixel by hand: image 0 of batch 2, green channel, row 3, column 7
    assert ds.train_x[4, 1, 3, 7].item() == batches["data_batch_2"][0][0, 1024 + 3 * 32 + 7]
    assert ds.train_coarse is None and ds.test_coarse is None
    assert torch.equal(ds.plot_labels(), ds.test_y)


def test_cifar100_keeps_fine_and_coarse_labels(tmp_path):
    splits = write_cifar100(tmp_path, n_train=12, n_test=6)
    ds = load_dataset("cifar100", str(tmp_path))

    assert ds.num_classes == 100 and ds.channels == 3
    assert tuple(ds.train_x.shape) == (12, 3, 32, 32) and tuple(ds.test_x.shape) == (6, 3, 32, 32)
    for x, y, coarse, (data, fine_ref, coarse_ref) in (
        (ds.train_x, ds.train_y, ds.train_coarse, splits["train"]),
        (ds.test_x, ds.test_y, ds.test_coarse, splits["test"]),
    ):
        assert x.dtype == torch.uint8 and y.dtype == torch.int64 and coarse.dtype == torch.int64
        np.testing.assert_array_equal(x.numpy(), cifar_images(data))
        np.testing.assert_array_equal(y.numpy(), fine_ref)
        np.testing.assert_array_equal(coarse.numpy(), coarse_ref)
    # Figure 3 colours CIFAR-100 by superclass
    assert torch.equal(ds.plot_labels(), ds.test_coarse)


def test_cifar_pickle_missing_a_key_names_the_file(tmp_path):
    write_cifar100(tmp_path)
    broken = tmp_path / "cifar-100-python" / "train"
    with open(broken, "rb") as f:
        entry = pickle.load(f)
    del entry["coarse_labels"]
    write_pickle(broken, entry)
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", str(tmp_path))
    assert str(broken) in str(err.value) and "coarse_labels" in str(err.value)


def test_cifar10_batch_without_labels_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    write_pickle(broken, {"data": np.zeros((4, 3072), dtype=np.uint8)})
    with pytest.raises(DataError, match="data_batch_3") as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(broken) in str(err.value) and "labels" in str(err.value)


def test_cifar_file_that_is_not_a_pickle_names_the_file(tmp_path):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "test_batch"
    broken.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(broken) in str(err.value)


def test_cifar_wrong_row_size_is_an_error_not_a_wrong_shape(tmp_path):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    write_pickle(broken, {"data": np.zeros((4, 1024), dtype=np.uint8), "labels": [0, 1, 2, 3]})
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", str(tmp_path))
    assert str(broken) in str(err.value)


def test_cifar_labels_out_of_range_are_an_error(tmp_path):
    write_cifar10(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_pickle(broken, {"data": np.zeros((2, 3072), dtype=np.uint8), "labels": [3, 10]})
    with pytest.raises(DataError, match="0..9"):
        load_dataset("cifar10", str(tmp_path))


# ---------------------------------------------------------------- missing and corrupt files


@pytest.mark.parametrize(
    "name, folder, files",
    [
        ("mnist", "MNIST/raw", list(IDX_NAMES.values())),
        ("fashion_mnist", "FashionMNIST/raw", list(IDX_NAMES.values())),
        ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]),
        ("cifar100", "cifar-100-python", ["train", "test"]),
    ],
)
def test_missing_dataset_names_files_folder_and_download_command(tmp_path, name, folder, files):
    with pytest.raises(DataError) as err:
        load_dataset(name, str(tmp_path))
    message = str(err.value)
    for f in files:
        assert f in message
    assert str(tmp_path / folder) in message
    # a command to run, in backticks, that fetches this dataset into this data root
    commands = re.findall(r"`([^`]+)`", message)
    assert any(
        c.startswith("python -m benchmark.") and "--download" in c and f"--data-dir {tmp_path}" in c and re.search(rf"\b{name}\b", c)
        for c in commands
    ), message


def test_partly_missing_cifar10_names_only_the_missing_batch(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as err:
        check_available("cifar10", str(tmp_path))
    message = str(err.value)
    assert "data_batch_4" in message and "data_batch_3" not in message and "--download" in message


def test_one_missing_idx_file_is_reported(tmp_path):
    write_idx_dataset(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", str(tmp_path))
    assert "t10k-labels-idx1-ubyte" in str(err.value) and "train-images-idx3-ubyte" not in str(err.value)


def test_digits_needs_no_files_and_unknown_names_are_errors(tmp_path):
    check_available("digits", str(tmp_path))  # embedded in scikit-learn
    assert required_files("digits", tmp_path) == []
    with pytest.raises(DataError, match="imagenet"):
        check_available("imagenet", str(tmp_path))


def _corrupt(path: Path, how: str) -> None:
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[: len(raw) - 37])
    elif how == "wrong-magic":
        path.write_bytes(struct.pack(">I", 0x12345678) + raw[4:])
    elif how == "labels-magic":  # a 1-D IDX header on an image file
        path.write_bytes(struct.pack(">I", LABEL_MAGIC) + raw[4:])


@pytest.mark.parametrize("how", ["truncated", "wrong-magic", "labels-magic"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_corrupt_image_file_is_a_data_error_naming_it(tmp_path, how, split):
    write_idx_dataset(tmp_path, "MNIST")
    broken = tmp_path / "MNIST" / "raw" / IDX_NAMES[(split, "images")]
    _corrupt(broken, how)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", str(tmp_path))
    assert str(broken) in str(err.value)
    assert "--download" in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "wrong-magic"])
def test_corrupt_labels_file_is_a_data_error(tmp_path, how):
    write_idx_dataset(tmp_path, "FashionMNIST")
    _corrupt(tmp_path / "FashionMNIST" / "raw" / IDX_NAMES[("test", "labels")], how)
    with pytest.raises(DataError) as err:
        load_dataset("fashion_mnist", str(tmp_path))
    assert str(tmp_path / "FashionMNIST" / "raw") in str(err.value)


@pytest.mark.parametrize("how", ["truncated", "wrong-magic"])
def test_corrupt_labels_file_error_names_the_labels_file(tmp_path, how):
    write_idx_dataset(tmp_path, "MNIST")
    broken = tmp_path / "MNIST" / "raw" / IDX_NAMES[("test", "labels")]
    _corrupt(broken, how)
    with pytest.raises(DataError) as err:
        load_dataset("mnist", str(tmp_path))
    assert str(broken) in str(err.value)


def test_labels_count_differing_from_images_is_an_error(tmp_path):
    write_idx_dataset(tmp_path, "MNIST", n_train=30)
    write_idx(tmp_path / "MNIST" / "raw" / IDX_NAMES[("train", "labels")], np.zeros(29, dtype=np.uint8), LABEL_MAGIC)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path))


def test_idx_labels_outside_0_to_9_are_an_error(tmp_path):
    write_idx_dataset(tmp_path, "MNIST", n_train=30)
    write_idx(tmp_path / "MNIST" / "raw" / IDX_NAMES[("train", "labels")], np.full(30, 12, dtype=np.uint8), LABEL_MAGIC)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", str(tmp_path))


def test_wrong_image_size_is_an_error_not_a_wrong_shape(tmp_path):
    write_idx_dataset(tmp_path, "MNIST", n_train=30)
    write_idx(tmp_path / "MNIST" / "raw" / IDX_NAMES[("train", "images")], np.zeros((30, 32, 32), dtype=np.uint8), IMAGE_MAGIC)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", str(tmp_path))


def test_cli_reports_missing_data_in_one_line_with_exit_code_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.trial", "--dataset", "mnist", "--data-dir", str(empty)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:")
    assert "Traceback" not in proc.stderr
    assert "train-images-idx3-ubyte" in lines[0] and "--download" in lines[0] and str(empty) in lines[0]
    assert proc.stdout == ""


# ---------------------------------------------------------------- data dir resolution


def test_resolve_data_dir_prefers_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert resolve_data_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_data_dir(None) == (tmp_path / "from-env").resolve()
    monkeypatch.delenv(DATA_DIR_ENV)
    resolved = resolve_data_dir(None)
    assert resolved.is_absolute() and resolved == Path("~/.cache/vqbench/data").expanduser().resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir("relative") == tmp_path.resolve() / "relative"


def test_data_dir_from_environment_is_used_for_loading(tmp_path, monkeypatch):
    arrays = write_idx_dataset(tmp_path, "MNIST")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    ds = load_dataset("mnist")
    np.testing.assert_array_equal(ds.test_x[:, 0, 2:30, 2:30].numpy(), arrays["test"][0])


# ---------------------------------------------------------------- digits (embedded)


def test_digits_split_is_stratified_fixed_and_covers_every_image():
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    ds = load_dataset("digits")
    assert ds.num_classes == 10 and ds.channels == 1
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.train_x.shape[1:] == (1, 32, 32) and ds.test_x.shape[1:] == (1, 32, 32)
    assert ds.train_x.shape[0] + ds.test_x.shape[0] == 1797 == len(labels)
    assert ds.test_x.shape[0] == 450  # a quarter, rounded up

    # stratified: every class is split 3:1 up to rounding
    totals = np.bincount(labels, minlength=10)
    test_counts = np.bincount(ds.test_y.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - totals * 0.25) <= 1)
    np.testing.assert_array_equal(np.bincount(ds.train_y.numpy(), minlength=10) + test_counts, totals)

    # every image is its original, upsampled bilinearly to 32x32 on the 0..255 scale,
    # each original appears exactly once, and with its own label
    reference = torch.from_numpy(
        np.stack([resize(im.reshape(8, 8) * (255.0 / 16.0), (32, 32), order=1, mode="edge", anti_aliasing=False) for im in images])
    ).flatten(1)
    loaded = torch.cat([ds.train_x, ds.test_x]).double().flatten(1)
    match = torch.cdist(loaded, reference).argmin(1)
    assert sorted(match.tolist()) == list(range(1797))
    assert (loaded - reference[match]).abs().max() <= 0.5 + 1e-6
    np.testing.assert_array_equal(torch.cat([ds.train_y, ds.test_y]).numpy(), labels[match.numpy()])

    # the same split on every call, whatever the global seeds
    load_dataset.cache_clear()
    torch.manual_seed(123)
    np.random.seed(123)
    again = load_dataset("digits")
    assert again is not ds
    for a, b in ((ds.train_x, again.train_x), (ds.train_y, again.train_y), (ds.test_x, again.test_x), (ds.test_y, again.test_y)):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- the real files (skip where absent)

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    "name, train_counts, test_counts, train_mean",
    [
        ("mnist", MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS, 33.318),
        ("fashion_mnist", [6000] * 10, [1000] * 10, 72.94),
    ],
)
def test_real_idx_datasets(shared_data, name, train_counts, test_counts, train_mean):
    ds = load_dataset(name, str(shared_data))
    assert tuple(ds.train_x.shape) == (60000, 1, 32, 32) and tuple(ds.test_x.shape) == (10000, 1, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert torch.bincount(ds.train_y, minlength=10).tolist() == train_counts
    assert torch.bincount(ds.test_y, minlength=10).tolist() == test_counts
    # the README's mean is over the original 28x28 pixels; padding adds only zeros
    centre = ds.train_x[:, :, 2:30, 2:30]
    assert centre.double().mean().item() == pytest.approx(train_mean, abs=0.01)
    assert ds.train_x.sum() == centre.sum() and ds.test_x.sum() == ds.test_x[:, :, 2:30, 2:30].sum()
