"""Image-folder datasets: folders of real PNG and JPEG files written here, the machine's cache, every
bad input refused before Ray, the dataset's card on its runs, and the shared CIFAR-10 JPEG copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import image_folder
from benchmark.config import ConfigError, TrialConfig, check_dataset, dataset_label, normalise_dataset
from benchmark.data import load_dataset
from benchmark.data_files import DataError
from benchmark.sweep import cli
from tests.conftest import REPO
from tests.test_endings import refused_fast

CLASSES = ("cat", "dog")  # sorted: labels 0, 1


@pytest.fixture(autouse=True)
def _fresh_loads():
    load_dataset.cache_clear()
    yield
    load_dataset.cache_clear()


def write_folder(root: Path, size: int = 32, mode: str = "RGB", per_class: dict[str, int] | None = None, seed: int = 0) -> dict:
    """<root>/{train,test}/<class>/ with PNGs in train and JPEGs in test; returns what each file holds, decoded by Pillow."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    written = {}
    for split, suffix in (("train", ".png"), ("test", ".jpg")):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range((per_class or {}).get(split, 3)):
                pixels = rng.integers(0, 256, size=(size, size, channels), dtype=np.uint8)
                path = folder / f"{i:04d}{suffix}"
                Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode).save(path)
                with Image.open(path) as image:
                    written[path] = np.asarray(image.resize((32, 32), Image.BILINEAR) if size != 32 else image)
    return written


def as_chw(pixels: np.ndarray) -> np.ndarray:
    return pixels.reshape(32, 32, -1).transpose(2, 0, 1)


# ---------------------------------------------------------------- loading


def test_png_and_jpeg_folders_load_to_the_files_pixels_and_sorted_class_labels(tmp_path):
    written = write_folder(tmp_path / "pets")
    ds = load_dataset(str(tmp_path / "pets"))
    assert ds.name == "pets" and ds.num_classes == 2 and ds.channels == 3
    assert ds.train_x.dtype == torch.uint8 and tuple(ds.train_x.shape) == (6, 3, 32, 32) and tuple(ds.test_x.shape) == (6, 3, 32, 32)
    assert ds.train_y.tolist() == [0, 0, 0, 1, 1, 1] and ds.test_y.dtype == torch.int64
    train_files = sorted(p for p in written if p.parts[-3] == "train")
    for index, path in enumerate(train_files):  # PNG is lossless: the exact pixels
        assert np.array_equal(ds.train_x[index].numpy(), as_chw(written[path]))
    test_files = sorted(p for p in written if p.parts[-3] == "test")
    for index, path in enumerate(test_files):  # JPEG: what Pillow decodes from the file, not what was saved
        assert np.array_equal(ds.test_x[index].numpy(), as_chw(written[path]))
    assert ds.card.class_names == CLASSES and ds.card.train_images == 6 and ds.card.test_images == 6 and ds.card.channels == 3


def test_a_folder_name_is_looked_up_in_the_data_root(tmp_path):
    write_folder(tmp_path / "data" / "pets")
    ds = load_dataset("pets", str(tmp_path / "data"))
    assert ds.name == "pets" and ds.card.root == str(tmp_path / "data" / "pets")


def test_grey_images_load_with_one_channel(tmp_path):
    write_folder(tmp_path / "grey", mode="L")
    assert load_dataset(str(tmp_path / "grey")).channels == 1


def test_larger_square_images_are_resized_to_32_with_pillows_bilinear_filter(tmp_path):
    written = write_folder(tmp_path / "big", size=64)
    ds = load_dataset(str(tmp_path / "big"))
    first = sorted(p for p in written if p.parts[-3] == "train")[0]
    assert tuple(ds.train_x.shape[1:]) == (3, 32, 32)
    assert np.array_equal(ds.train_x[0].numpy(), as_chw(written[first]))


def test_the_content_hash_follows_the_files_not_the_folder(tmp_path):
    write_folder(tmp_path / "a")
    write_folder(tmp_path / "b")
    first, second = load_dataset(str(tmp_path / "a")), load_dataset(str(tmp_path / "b"))
    assert first.card.content_hash == second.card.content_hash  # same bytes under the same relative paths
    (tmp_path / "b" / "train" / "cat" / "0000.png").rename(tmp_path / "b" / "train" / "dog" / "0009.png")  # relabelled
    load_dataset.cache_clear()
    assert load_dataset(str(tmp_path / "b")).card.content_hash != first.card.content_hash


# ---------------------------------------------------------------- the cache


def test_the_second_load_reads_the_cache_and_decodes_nothing(tmp_path, monkeypatch, image_cache):
    write_folder(tmp_path / "pets")
    first = load_dataset(str(tmp_path / "pets"))
    assert len(list(image_cache.glob("*.npz"))) == 1 and not list(image_cache.glob("*.tmp"))
    load_dataset.cache_clear()
    monkeypatch.setattr(image_folder, "decode", lambda listing: pytest.fail("decoded again despite a valid cache"))
    second = load_dataset(str(tmp_path / "pets"))
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    assert second.card == first.card


@pytest.mark.parametrize("damage", ["truncated", "bit flipped", "not a zip"])
def test_a_damaged_cache_is_said_and_rebuilt(tmp_path, image_cache, damage):
    write_folder(tmp_path / "pets")
    first = load_dataset(str(tmp_path / "pets"))
    cache = next(image_cache.glob("*.npz"))
    raw = bytearray(cache.read_bytes())
    if damage == "truncated":
        raw = raw[: len(raw) // 2]
    elif damage == "bit flipped":  # inside the arrays, past the zip headers: only the checksum notices
        raw[len(raw) // 3] ^= 0xFF
    else:
        raw = bytearray(b"garbage")
    cache.write_bytes(bytes(raw))
    load_dataset.cache_clear()
    with pytest.warns(UserWarning, match="is damaged"):
        again = load_dataset(str(tmp_path / "pets"))
    assert torch.equal(again.train_x, first.train_x) and torch.equal(again.test_x, first.test_x)
    load_dataset.cache_clear()
    assert torch.equal(load_dataset(str(tmp_path / "pets")).train_x, first.train_x)  # the rebuilt file is good


def test_an_edited_image_misses_the_cache(tmp_path):
    write_folder(tmp_path / "pets")
    before = load_dataset(str(tmp_path / "pets"))
    path = tmp_path / "pets" / "train" / "cat" / "0000.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    load_dataset.cache_clear()
    after = load_dataset(str(tmp_path / "pets"))
    assert after.train_x[0].sum() == 0 and not torch.equal(after.train_x, before.train_x)


def test_an_unwritable_cache_costs_time_not_the_load(tmp_path, monkeypatch):
    write_folder(tmp_path / "pets")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(image_folder.CACHE_ENV, str(tmp_path / "file" / "cache"))
    with pytest.warns(UserWarning, match="not writable"):
        assert load_dataset(str(tmp_path / "pets")).train_x.shape[0] == 6


# ---------------------------------------------------------------- bad input: exit 2 before Ray, naming the file, nothing written


def _no_train(root: Path) -> str:
    write_folder(root)
    for path in sorted((root / "train").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "train").rmdir()
    return "has no train/ folder"


def _classes_differ(root: Path) -> str:
    write_folder(root)
    (root / "test" / "dog").rename(root / "test" / "bird")
    return "only in train: ['dog']; only in test: ['bird']"


def _empty_class(root: Path) -> str:
    write_folder(root)
    for path in (root / "train" / "dog").iterdir():
        path.unlink()
    return f"class folder {root / 'train' / 'dog'} is empty"


def _text_file(root: Path) -> str:
    write_folder(root)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return f"{root / 'train' / 'cat' / 'notes.txt'} is not a .png, .jpg or .jpeg file"


def _corrupt_image(root: Path) -> str:
    write_folder(root)
    (root / "test" / "dog" / "0001.jpg").write_bytes(b"<html>404</html>")
    return f"{root / 'test' / 'dog' / '0001.jpg'} cannot be read as an image"


def _mixed_sizes(root: Path) -> str:
    write_folder(root)
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(root / "train" / "dog" / "0001.png")
    return f"{root / 'train' / 'dog' / '0001.png'} is RGB 28x28 but"


def _mixed_modes(root: Path) -> str:
    write_folder(root)
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(root / "test" / "cat" / "0002.jpg")
    return f"{root / 'test' / 'cat' / '0002.jpg'} is L 32x32 but"


def _not_square(root: Path) -> str:
    write_folder(root, per_class={"train": 1, "test": 1})
    for path in root.rglob("*.*"):
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(path)
    return "is 48x32, not square"


def _alpha(root: Path) -> str:
    write_folder(root, per_class={"train": 1, "test": 1})
    for path in root.rglob("*.png"):
        Image.fromarray(np.zeros((32, 32, 4), np.uint8), "RGBA").save(path)
    return "is in mode RGBA: images must be L (grey) or RGB"


def _stray_file(root: Path) -> str:
    write_folder(root)
    (root / "train" / "labels.csv").write_text("x")
    return f"{root / 'train' / 'labels.csv'} is a file where class folders belong"


BAD_FOLDERS = [
    _no_train,
    _classes_differ,
    _empty_class,
    _text_file,
    _corrupt_image,
    _mixed_sizes,
    _mixed_modes,
    _not_square,
    _alpha,
    _stray_file,
]


@pytest.mark.parametrize("make", BAD_FOLDERS, ids=lambda f: f.__name__.strip("_"))
def test_a_bad_image_folder_is_refused_before_ray_naming_the_problem(tmp_path, monkeypatch, capsys, make):
    expected = make(tmp_path / "data" / "pets")
    argv = ["--space", "smoke", "--datasets", "pets", "--data-dir", str(tmp_path / "data")]
    refused_fast(tmp_path, monkeypatch, capsys, argv, expected)


@pytest.mark.parametrize("make", [_mixed_modes, _text_file], ids=["mixed modes", "text file"])
def test_the_trial_cli_refuses_a_bad_folder_with_exit_2_and_writes_no_figure(tmp_path, make):
    expected = make(tmp_path / "pets")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmark.trial",
            "--dataset",
            str(tmp_path / "pets"),
            "--epochs",
            "1",
            "--figures",
            str(tmp_path / "figs"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert done.returncode == 2 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "figs").exists()


def test_a_missing_folder_names_the_data_root_and_how_to_point_at_it(tmp_path, monkeypatch, capsys):
    (tmp_path / "data").mkdir()
    err = refused_fast(
        tmp_path,
        monkeypatch,
        capsys,
        ["--space", "smoke", "--datasets", "pets", "--data-dir", str(tmp_path / "data")],
        f"{tmp_path / 'data' / 'pets'} does not exist",
    )
    assert "--data-dir" in err and "VQBENCH_DATA_DIR" in err


def test_a_bad_dataset_card_is_refused(tmp_path):
    write_folder(tmp_path / "pets")
    (tmp_path / "pets" / "DATASET.toml").write_text("note = [unclosed")
    with pytest.raises(DataError, match="DATASET.toml is not valid TOML"):
        load_dataset(str(tmp_path / "pets"))


# ---------------------------------------------------------------- names and config


@pytest.mark.parametrize("name", ["mnist", "CIFAR-10-images", "my_photos.v2", "/abs/path/to/pets"])
def test_builtin_names_folder_names_and_absolute_paths_are_datasets(name):
    check_dataset(name)


@pytest.mark.parametrize("name", ["", "rel/path", "has space", "-dash", "/abs/with space"])
def test_other_names_are_refused_saying_what_a_dataset_can_be(name):
    with pytest.raises(ConfigError, match="name an image folder"):
        check_dataset(name)


def test_paths_become_absolute_and_names_stay(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert normalise_dataset("./pets") == str(tmp_path / "pets") and normalise_dataset("pets") == "pets"
    assert dataset_label(str(tmp_path / "pets")) == "pets"
    config = TrialConfig.from_dict({"dataset": str(tmp_path / "pets"), "model": "vae"})
    assert config.name.startswith("vae-pets-") and "/" not in config.name


def test_batch_norm_is_on_for_image_folders_and_cifar_and_off_for_grey_builtins():
    assert TrialConfig.from_dict({"dataset": "CIFAR-10-images"}).batch_norm
    assert TrialConfig.from_dict({"dataset": "cifar100"}).batch_norm
    assert not TrialConfig.from_dict({"dataset": "mnist"}).batch_norm
    assert not TrialConfig.from_dict({"dataset": "pets", "batch_norm": "false"}).batch_norm


# ---------------------------------------------------------------- the card travels with the runs


def test_the_folders_own_card_and_a_known_copys_note(tmp_path):
    write_folder(tmp_path / "pets")
    (tmp_path / "pets" / "DATASET.md").write_text("# My pets, 32x32 phone photos\n\nMore text.\n")
    assert load_dataset(str(tmp_path / "pets")).card.note == "My pets, 32x32 phone photos"
    (tmp_path / "pets" / "DATASET.toml").write_text('note = "pets, TOML card"\n')
    load_dataset.cache_clear()
    assert load_dataset(str(tmp_path / "pets")).card.note == "pets, TOML card"  # the TOML card first
    digest = load_dataset(str(tmp_path / "pets")).card.content_hash
    assert image_folder.read_note(tmp_path / "nowhere", digest) == ""
    assert "JPEG quality 75" in next(iter(image_folder.KNOWN_NOTES.values()))


@pytest.mark.slow
def test_a_sweep_over_an_image_folder_tags_every_run_with_the_card(tmp_path, monkeypatch, local_ray):
    """On the test's own Ray, shut down after it: an in-process sweep leaves the Ray it started running."""
    from mlflow.tracking import MlflowClient

    write_folder(tmp_path / "data" / "pets", per_class={"train": 24, "test": 8})
    (tmp_path / "data" / "pets" / "DATASET.toml").write_text('note = "pets: noise images for a test"\n')
    space = tmp_path / "tiny.py"
    space.write_text(
        "from benchmark.space import Study\nDESCRIPTION = 'one tiny trial per model'\n"
        "def studies(options):\n"
        "    base = {'dataset': 'pets', 'epochs': 1, 'num_codes': 8, 'code_dim': 8, 'train_probe_every': 0}\n"
        "    return [Study('tiny', ({**base, 'model': 'vae'}, {**base, 'model': 'vqvae'}))]\n"
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    code = cli.main(
        [
            "--space",
            str(space),
            "--data-dir",
            str(tmp_path / "data"),
            "--tracking-uri",
            uri,
            "--storage-path",
            str(tmp_path / "ray"),
            "--experiment",
            "pets",
        ]
    )
    assert code == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("pets")
    trials = client.search_runs([experiment.experiment_id], "tags.`vqbench.role` = 'trial'")
    assert len(trials) == 2
    expected = load_dataset("pets", str(tmp_path / "data")).card
    for run in trials:
        assert run.info.status == "FINISHED"
        tags = run.data.tags
        assert tags["dataset.hash"] == expected.content_hash and tags["dataset.note"] == "pets: noise images for a test"
        assert tags["dataset.classes"] == "2" and tags["dataset.class_names"] == "cat,dog" and tags["dataset.channels"] == "3"
        assert (tags["dataset.train_images"], tags["dataset.test_images"]) == ("48", "16")
        assert run.data.params["batch_norm"] == "True"
        assert -1 <= run.data.metrics["cluster/latent/ari"] <= 1 and -1 <= run.data.metrics["cluster/pixels/ari"] <= 1
    from analysis import export, report

    csv = tmp_path / "runs.csv"
    assert export.main(["--experiment", "pets", "--tracking-uri", uri, "--out", str(csv)]) == 0
    import pandas as pd

    rows = pd.read_csv(csv)
    assert set(rows["dataset.hash"]) == {expected.content_hash} and set(rows["dataset.class_names"]) == {"cat,dog"}
    assert report.main(["--runs", str(csv), "--out", str(tmp_path / "report")]) == 0
    header = (tmp_path / "report" / "report.md").read_text()
    assert f"`pets` (pets), hash `{expected.content_hash[:12]}`, 2 classes: pets: noise images for a test" in header
    assert "SSIM on colour images: scikit-image's `structural_similarity` with `channel_axis`" in header

    from benchmark import load_model

    model, config = load_model(trials[0].info.run_id, uri)  # an image folder's shape comes from model.pt, not a table
    assert config.dataset == "pets" and next(model.parameters()).shape[1] == 3  # the first convolution reads RGB


# ---------------------------------------------------------------- the shared CIFAR-10 JPEG copy


@pytest.fixture
def cifar_copy(shared_data) -> Path:
    folder = shared_data / "CIFAR-10-images"
    if not (folder / "train").is_dir():
        pytest.skip(f"the CIFAR-10 JPEG copy is not under {shared_data}")
    return folder


def test_a_paper_dry_run_over_the_cifar_copy_lists_its_trials_reading_no_image(cifar_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(image_folder, "decode", lambda listing: pytest.fail("a dry run decoded images"))
    monkeypatch.setattr(image_folder, "list_folder", lambda root: pytest.fail("a dry run listed every image"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--space", "paper", "--datasets", "CIFAR-10-images", "--data-dir", str(cifar_copy.parent), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count('"dataset": "CIFAR-10-images"') == 12 and "12 trials in space 'paper'" in out
    assert f"CIFAR-10-images: image folder {cifar_copy.resolve()}" in out
    assert not list(tmp_path.iterdir())


def test_the_cifar_copy_loads_as_cifar10_with_its_note(cifar_copy):
    ds = load_dataset("CIFAR-10-images", str(cifar_copy.parent))
    assert tuple(ds.train_x.shape) == (50000, 3, 32, 32) and tuple(ds.test_x.shape) == (10000, 3, 32, 32)
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.card.class_names[:3] == ("airplane", "automobile", "bird") and "JPEG quality 75 copy" in ds.card.note
    means = ds.train_x.float().mean((0, 2, 3)) / 255  # the channel means its README gives
    assert torch.allclose(means, torch.tensor([0.4913, 0.4821, 0.4465]), atol=5e-4)
