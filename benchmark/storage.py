"""Is a sweep's --storage-path visible from every node of the Ray cluster it runs on?

Ray Tune keeps a sweep's experiment state and every trial's checkpoints under one path; a trial
retried on another node resumes from there. A folder on one node's disk fails that, and Ray Tune
says so only when a trial on another node writes its first checkpoint. So the sweep checks first:
a URI (s3://, gs://, ...) is left to Ray; a path must be seen by every live node (NFS or EFS
mounted at the same path, or nodes sharing one machine, as in the tests).
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

from benchmark.config import ConfigError


def _exists(path: str) -> bool:
    return os.path.exists(path)


def check_shared(storage_path: str) -> None:
    """After `ray.init`: raise ConfigError naming the nodes that cannot see a local `storage_path`."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if "://" in storage_path or len(nodes) < 2:
        return
    folder = Path(storage_path).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / f".vqbench-shared-{uuid.uuid4().hex}"
    marker.touch()
    try:
        probe = ray.remote(num_cpus=0)(_exists)
        seen = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker)) for n in nodes])
    finally:
        marker.unlink()
    blind = sorted({n["NodeManagerAddress"] for n, sees in zip(nodes, seen) if not sees})
    if blind:
        raise ConfigError(
            f"--storage-path {storage_path}: {folder} is not visible from node(s) {', '.join(blind)} of this "
            f"{len(nodes)}-node cluster; use s3://BUCKET/PATH or a shared filesystem (NFS, EFS) mounted at the same path on every node"
        )
