"""The README's example outputs, checked against what the commands print now: their shape (words, separators, which
fields and in what order), never their numbers, so that an example cannot drift from the code again."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd

from benchmark.sweep.summary import SPREAD_CAPTION, Outcome, render
from benchmark.tracking.store import TrackingTarget

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)*(?:e[-+]?\d+)?")


def shape(line: str) -> str:
    """A line with every number replaced by `#` and runs of spaces squeezed: what an example promises."""
    return re.sub(r" +", " ", NUMBER.sub("#", line.strip()))


def block_after(marker: str) -> list[str]:
    """The lines of the first plain fenced block after `marker` in the README."""
    lines = README[README.index(marker) :].splitlines()
    opened, language, found = False, "", []
    for line in lines:
        if line.startswith("```"):
            if opened and not language:
                return found
            opened, language, found = not opened, line[3:].strip(), []
        elif opened:
            found.append(line)
    raise AssertionError(f"no plain example block after {marker!r}")


def test_the_trial_cli_prints_the_readme_s_per_epoch_lines(tmp_path):
    example = [line for line in block_after("## One trial") if line.startswith("epoch ")]
    assert len(example) >= 2, "the README shows the trial's per-epoch lines"
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.trial", "--model", "vqvae", "--dataset", "digits", "--epochs", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [line for line in done.stderr.splitlines() if line.startswith("epoch ")]
    assert len(printed) == 2, done.stderr[-2000:]
    # every epoch but the last has the first example's shape; the last, the last example's (it names the evaluation)
    assert shape(printed[0]) == shape(example[0]), (printed[0], example[0])
    assert shape(printed[-1]) == shape(example[-1]), (printed[-1], example[-1])
    assert all(shape(line) == shape(example[0]) for line in example[:-1])
    result = json.loads(done.stdout)
    assert {"config", "dataset", "device", "metrics"} <= set(result)  # "prints one JSON object: ..."


def test_the_sweep_s_closing_table_has_the_readme_s_caption_and_header(tmp_path):
    example = block_after("What the quick sweep prints")
    caption = example.index(SPREAD_CAPTION)  # the caption as the code prints it, word for word
    header, rows = example[caption + 1], example[caption + 2 :]
    rows = rows[: next(i for i, line in enumerate(rows) if not line.strip())]
    # the sweep's own table, from what a finished quick sweep's trials leave behind (a VAE and three K, two seeds)
    runs = []
    for k in (None, 16, 64, 256):
        for seed in (0, 1):
            runs.append(
                {
                    "dataset": "digits",
                    "model": "vqvae" if k else "vae",
                    "K": k,
                    "label_emb": "none",
                    "setting": f"vqvae-digits-K{k}-D64-b0.25" if k else "vae-digits-D64-kl0.01",
                    "ending": "finished",
                    "run_name": f"r{k}-{seed}",
                    "run_id": f"id{k}{seed}",
                    "error": None,
                    "probe_acc": 0.9 + 0.01 * seed,
                    "pixels_acc": 0.95,
                    "mse": 0.01,
                    "ssim": 0.7 + 0.01 * seed,
                    "code_usage": 0.5 if k else None,
                }
            )
    target = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", "1", "parent")
    text = render(
        Outcome(pd.DataFrame(runs), interrupted=False),
        "quick-20261201-120000",
        68.0,
        target,
        "vqbench",
        "python -m benchmark.sweep --resume x",
    )
    lines = text.splitlines()
    at = lines.index(SPREAD_CAPTION)
    assert header.split() == lines[at + 1].split()
    printed = lines[at + 2 : at + 2 + len(rows)]
    assert [shape(line) for line in printed] == [shape(line) for line in rows]
    assert shape(lines[0]) == shape(next(line for line in example if line.startswith("sweep ") and " ended after " in line))
    assert shape(lines[-1]).split(" --tracking-uri")[0] == shape(example[-1]).split(" --tracking-uri")[0]


def test_the_readme_s_layout_names_every_module_of_benchmark_where_it_is():
    """The layout as it really is: each sub-package of `benchmark/` on its own line, every module named in its block."""
    layout = block_after("## Layout")
    blocks: dict[str, str] = {}
    current = None
    for line in layout:
        head = line.split()[0] if line.strip() and not line.startswith(" " * 16) else None
        if head:
            current = head.rstrip("/")
        if current:
            blocks[current] = blocks.get(current, "") + " " + line
    packages = {"": "benchmark", **{m.name: m.name for m in pkgutil.iter_modules([str(REPO / "benchmark")]) if m.ispkg}}
    for folder, block in packages.items():
        modules = {m.name for m in pkgutil.iter_modules([str(REPO / "benchmark" / folder)]) if not m.ispkg} - {"__main__"}
        missing = sorted(m for m in modules if not re.search(rf"\b{m}\b", blocks.get(block, "")))
        assert not missing, f"README's layout does not name {missing} under {block}/"
