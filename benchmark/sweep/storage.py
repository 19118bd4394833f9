"""A sweep's --storage-path: a local folder or a URI, and is it visible from every node of the cluster?

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


class RemoteFolder:
    """A folder given as a URI (s3://BUCKET/PATH), with the few pathlib methods the sweep uses, read and
    written through pyarrow's filesystems as Ray Tune does. A Path would make s3://b/x into ./s3:/b/x."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def __truediv__(self, name: str) -> RemoteFolder:
        return RemoteFolder(f"{self.uri}/{name}")

    def __str__(self) -> str:
        return self.uri

    @property
    def parent(self) -> RemoteFolder:
        return RemoteFolder(self.uri.rsplit("/", 1)[0])

    def _located(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.uri)

    def _type(self):
        filesystem, path = self._located()
        return filesystem.get_file_info(path).type

    def exists(self) -> bool:
        import pyarrow.fs

        return self._type() != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._type() == pyarrow.fs.FileType.File

    def read_text(self) -> str:
        filesystem, path = self._located()
        with filesystem.open_input_stream(path) as stream:
            return stream.read().decode()

    def write_text(self, text: str) -> None:
        filesystem, path = self._located()
        with filesystem.open_output_stream(path) as stream:
            stream.write(text.encode())

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        filesystem, path = self._located()
        filesystem.create_dir(path, recursive=parents)


def storage_folder(storage_path: str) -> Path | RemoteFolder:
    """A URI stays a URI (Ray Tune reads s3:// itself); a path is made absolute."""
    return RemoteFolder(storage_path) if "://" in storage_path else Path(storage_path).expanduser().resolve()


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
        seen = ray.get(
            [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(marker)) for n in nodes]
        )
    finally:
        marker.unlink()
    blind = sorted({n["NodeManagerAddress"] for n, sees in zip(nodes, seen) if not sees})
    if blind:
        raise ConfigError(
            f"--storage-path {storage_path}: {folder} is not visible from node(s) {', '.join(blind)} of this "
            f"{len(nodes)}-node cluster; use s3://BUCKET/PATH or a shared filesystem (NFS, EFS) mounted at the same path on every node"
        )
