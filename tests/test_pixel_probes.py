"""The on-disk pixel-probe cache: the numbers of the uncached computation, and a miss for anything they depend on."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from benchmark.config import TrialConfig
from benchmark.data import Dataset
from benchmark.evaluation import pixel_probes as cache
from benchmark.evaluation.evaluate import evaluate
from benchmark.evaluation.probe import probe_all
from benchmark.evaluation.probe_settings import ProbeSettings
from benchmark.models import build_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = ProbeSettings(
    max_epochs=2, mlp_epochs=2, batch_size=32, knn_train_size=50, mlp_lrs=(2e-3,), mlp_weight_decays=(1e-4,), l2_grid=(1.0, 1e-2)
)


def small_dataset(seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    images = lambda n: torch.randint(0, 256, (n, 1, 32, 32), generator=g, dtype=torch.uint8)  # noqa: E731
    return Dataset("small", images(60), torch.arange(60) % 10, images(30), torch.arange(30) % 10, 10)


@pytest.fixture
def computed(monkeypatch) -> list[tuple[int, ProbeSettings]]:
    """Every real computation behind the cache, as (seed, settings)."""
    calls = []
    compute = cache.compute_pixel_probes

    def counting(data, seed, settings):
        calls.append((seed, settings))
        return compute(data, seed, settings)

    monkeypatch.setattr(cache, "compute_pixel_probes", counting)
    return calls


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def test_cached_results_are_the_uncached_computation(pixel_probe_cache, computed):
    data = small_dataset()
    direct = probe_all(data.train_x.flatten(1).float(), data.train_y, data.test_x.flatten(1).float(), data.test_y, 10, 3, QUICK)
    first = cache.pixel_probes(data, 3, QUICK)
    second = cache.pixel_probes(data, 3, QUICK)
    assert first == direct and second == direct
    assert len(computed) == 1, "the second call reads the file"
    written = files(pixel_probe_cache)
    assert len(written) == 1 and written[0].suffix == ".json", "one file, no temporary left behind"
    stored = json.loads(written[0].read_text())
    assert stored["metrics"] == direct.metrics and stored["key"]["seed"] == 3


def test_a_changed_seed_setting_or_content_misses(computed):
    data = small_dataset()
    cache.pixel_probes(data, 0, QUICK)
    cache.pixel_probes(data, 1, QUICK)
    cache.pixel_probes(data, 0, dataclasses.replace(QUICK, lr=1e-3))
    edited_test = data.test_x.clone()
    edited_test[0, 0, 0, 0] ^= 1  # one bit of one test pixel
    cache.pixel_probes(dataclasses.replace(data, test_x=edited_test), 0, QUICK)
    cache.pixel_probes(dataclasses.replace(data, name="renamed"), 0, QUICK)  # the name is not the content
    assert [seed for seed, _ in computed] == [0, 1, 0, 0]


def test_a_changed_probe_code_misses(computed, monkeypatch):
    data = small_dataset()
    cache.pixel_probes(data, 0, QUICK)
    monkeypatch.setattr(cache, "_code_version", lambda: "another version of probe.py")
    cache.pixel_probes(data, 0, QUICK)
    assert len(computed) == 2


def test_every_probe_module_is_in_the_code_version(monkeypatch):
    """The probes live in several modules: an edit to any of them (the L-BFGS solver, say) must miss the cache."""
    from benchmark.evaluation import linear_probe

    before = cache._code_version()
    real = Path.read_bytes
    monkeypatch.setattr(
        Path, "read_bytes", lambda self: real(self) + (b"# edited" if self.name == Path(linear_probe.__file__).name else b"")
    )
    assert cache._code_version() != before


def test_another_thread_count_or_cpu_misses(computed, monkeypatch):
    """L-BFGS rounds differently on other threads and CPUs: a shared cache must not hand one's bits to another."""
    data = small_dataset()
    cache.pixel_probes(data, 0, QUICK)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        cache.pixel_probes(data, 0, QUICK)
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(cache.machine, "cpu_model", lambda: "another CPU")
    cache.pixel_probes(data, 0, QUICK)
    assert len(computed) == 3


@pytest.mark.parametrize("content", ["", "{not json", '{"key": 1}', '{"metrics": {"mlp_acc": 0.5}}', "[]"])
def test_a_corrupt_file_is_computed_again_and_replaced(pixel_probe_cache, computed, content):
    data = small_dataset()
    good = cache.pixel_probes(data, 0, QUICK)
    (path,) = files(pixel_probe_cache)
    path.write_text(content)
    assert cache.pixel_probes(data, 0, QUICK) == good
    assert len(computed) == 2 and json.loads(path.read_text())["metrics"] == good.metrics


def test_a_file_of_another_key_is_not_trusted(pixel_probe_cache, computed):
    """A file whose stored key differs (a hash collision, a hand-copied file) is a miss."""
    data = small_dataset()
    good = cache.pixel_probes(data, 0, QUICK)
    (path,) = files(pixel_probe_cache)
    stored = json.loads(path.read_text())
    path.write_text(
        json.dumps({"key": {**stored["key"], "seed": 99}, "metrics": {k: 0.0 for k in good.metrics}, "predictions": stored["predictions"]})
    )
    assert cache.pixel_probes(data, 0, QUICK) == good and len(computed) == 2


def test_an_unwritable_cache_costs_time_not_the_trial(tmp_path, monkeypatch, computed):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(cache.CACHE_ENV, str(blocker / "cache"))  # a folder under a file cannot exist
    data = small_dataset()
    with pytest.warns(UserWarning, match="not writable"):
        first = cache.pixel_probes(data, 0, QUICK)
    with pytest.warns(UserWarning):
        assert cache.pixel_probes(data, 0, QUICK) == first
    assert len(computed) == 2


def test_the_cache_folder_defaults_to_the_user_cache(monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV)
    assert cache.cache_dir() == Path("~/.cache/vqbench/pixel-probes").expanduser()


def test_trials_share_the_machine_cache(pixel_probe_cache, computed):
    """Two trials (two models, the same seed) compute the pixel probes once between them."""
    data = small_dataset()
    for model in ("vae", "vqvae"):
        config = TrialConfig(model=model, code_dim=4, num_codes=8)
        evaluate(build_model(config, 1, 10), data, config, QUICK)
    assert len(computed) == 1 and len(files(pixel_probe_cache)) == 1
