"""`cluster.yaml` rendered for Ray's local (ssh) provider, so a test runs the very commands AWS users run.

    python -m cluster.local --head-ip 127.0.0.1 --worker-ips 127.0.0.2 --ssh-user root \
        --ssh-key ~/.ssh/id_ed25519 > local.yaml

Only what describes machines changes: the provider, the ssh login, and the node types (the local
provider refuses `available_node_types` and `head_node_type`; it makes one type of its own).
File-mount sources are made absolute against the checkout (`~` against the home), as `ray up` from its root would read them.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
AWS_CONFIG = REPO / "cluster.yaml"
MACHINE_KEYS = ("provider", "auth", "available_node_types", "head_node_type")


def load(path: Path = AWS_CONFIG) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def local_config(
    config: dict[str, Any],
    head_ip: str,
    worker_ips: list[str],
    ssh_user: str,
    ssh_key: Path,
    checkout: Path = REPO,
    mount_sources: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """The same cluster on machines reached by ssh; `mount_sources` replaces a file mount's source."""
    local = {k: copy.deepcopy(v) for k, v in config.items() if k not in MACHINE_KEYS}
    local["provider"] = {"type": "local", "head_ip": head_ip, "worker_ips": list(worker_ips)}
    local["auth"] = {"ssh_user": ssh_user, "ssh_private_key": str(ssh_key)}
    sources = mount_sources or {}
    local["file_mounts"] = {
        target: str(sources.get(target, (checkout / Path(source).expanduser()).resolve()))
        for target, source in config.get("file_mounts", {}).items()
    }
    return local


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cluster.local", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=AWS_CONFIG, help="the AWS cluster config (default: cluster.yaml)")
    parser.add_argument("--head-ip", required=True)
    parser.add_argument("--worker-ips", required=True, help="comma-separated")
    parser.add_argument("--ssh-user", required=True)
    parser.add_argument("--ssh-key", type=Path, required=True, help="private key that logs in to every machine")
    args = parser.parse_args(argv)
    rendered = local_config(load(args.config), args.head_ip, args.worker_ips.split(","), args.ssh_user, args.ssh_key.expanduser().resolve())
    yaml.safe_dump(rendered, sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
