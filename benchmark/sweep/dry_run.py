"""A dry run: the trials a sweep would run and whether their data is here, needing none of it.

A person plans a sweep before fetching its datasets, so a missing dataset is reported with
the command that fetches it, not raised.
"""

from __future__ import annotations

import json

from ray.tune.search.sample import Categorical, Domain, Integer, LogUniform, Normal, Quantized

from benchmark.config import dataset_label
from benchmark.data_files import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    fetch_command,
    image_folder_root,
    is_image_folder,
    missing_files,
    resolve_data_dir,
)
from benchmark.image_folder import SPLITS
from benchmark.space import Study
from benchmark.sweep.progress import plural


def domain_text(domain: Domain) -> str:
    """A Ray Tune domain as a person writes it: `log-uniform int [16, 2048)`, `one of [16, 32]`."""
    if isinstance(domain, Categorical):
        return f"one of {list(domain.categories)}"
    sampler, q = domain.get_sampler(), 1
    if isinstance(sampler, Quantized):
        sampler, q = sampler.sampler, sampler.q
    step = f" in steps of {q:g}" if q != 1 else ""
    if isinstance(sampler, Normal):
        return f"normal(mean {sampler.mean:g}, sd {sampler.sd:g}){step}"
    kind = "log-uniform" if isinstance(sampler, LogUniform) else "uniform"
    if isinstance(domain, Integer):  # Ray's integer domains exclude their upper bound, but for steps above 1
        return f"{kind} int [{domain.lower}, {domain.upper}{']' if q != 1 else ')'}{step}"
    return f"{kind} [{domain.lower:g}, {domain.upper:g}]{step}"


def study_lines(study: Study) -> list[str]:
    if not study.is_search:
        return [f"{study.label}: {json.dumps(c, sort_keys=True)}" for c in study.configs]
    ranked = " and ".join(f"{metric} ({mode})" for metric, mode in study.objectives)
    header = f"{study.label}: {plural(study.num_samples, 'Optuna trial')} of {json.dumps(study.base, sort_keys=True)}, ranked on {ranked}, searching"
    return [header] + [f"  {key} ~ {domain_text(domain)}" for key, domain in study.search.items()]


def data_lines(datasets: list[str], data_dir: str | None, download: bool) -> list[str]:
    root = resolve_data_dir(data_dir)
    lines = [f"data in {root}:"]
    for name in datasets:
        if is_image_folder(name):  # its splits only: a dry run reads no image
            folder = image_folder_root(name, data_dir)
            absent = [split for split in SPLITS if not (folder / split).is_dir()]
            status = (
                f"image folder {folder}"
                if not absent
                else f"missing: no {'/ or '.join(absent)}/ in {folder}; pass --data-dir (or ${DATA_DIR_ENV}) naming the folder "
                f"that holds {dataset_label(name)}/, or the image folder's path"
            )
            lines.append(f"  {dataset_label(name)}: {status}")
            continue
        if name == "digits":
            status = "embedded in scikit-learn"
        elif not missing_files(name, root):
            status = "present"
        elif download:
            status = "missing; fetched once, on this machine, before Ray starts (--download)"
        else:
            status = (
                f"missing in {root} (--data-dir, else ${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}); point --data-dir or "
                f"${DATA_DIR_ENV} at a data root that holds it, or fetch it with `{fetch_command(name, root)}`"
            )
        lines.append(f"  {name}: {status}")
    return lines


def describe(studies: list[Study], space: str, datasets: list[str], data_dir: str | None, download: bool) -> str:
    """Every trial (or search), the data status per dataset, then the count: the line a person looks for last."""
    lines = [line for study in studies for line in study_lines(study)]
    total = sum(s.trial_count() for s in studies)
    return "\n".join(lines + data_lines(datasets, data_dir, download) + [f"{plural(total, 'trial')} in space {space!r}"])
