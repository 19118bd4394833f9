"""Stand-in machines for a cluster on this one host, isolated so that Ray's `ray stop` can only hit them.

`ray up` and `ray down` run `ray stop`, which kills every Ray process of the user on a host: run on
this machine as is, it would kill any other Ray here (a user's sweep, another test). So the whole
launch runs inside one private PID, mount, UTS and network namespace (only loopback in it), and each
stand-in machine is a nested PID+mount+UTS namespace with its own sshd on its own 127.0.0.x address
and its own hostname: a `ray stop` over ssh stops that machine's processes and nothing else. When
the sandbox's first process exits, the kernel ends every process inside it.

Inside, the machines share a private /tmp and /run, a fresh home (so ~/.ray, ~/.ssh and what `ray up`
copies stay out of the real one) and a copy-on-write overlay of this Python environment (so `pip
install -e` in the setup commands changes nothing outside). What the sandbox needs from the host (the
workspace, the checkout, the environment and, for a venv, the installation its interpreter links to)
stays at its own path wherever it lives, under /tmp or the home included (`cover_plan`).
`/opt/pytorch/bin/activate` puts that environment on PATH, as it does on the AWS Deep Learning AMI:
the commands of `cluster.yaml` then run unchanged.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cluster.local import REPO

ENV_PREFIX = Path(sys.prefix)
BASE_PREFIX = Path(sys.base_prefix)  # where a venv's interpreter and standard library live; sys.prefix outside a venv
HANDLES = Path("/mnt")  # a tmpfs here holds a handle on each host path while a mount hides it
IMAGE_ENV = Path("/opt/pytorch")  # where the AWS Deep Learning AMI keeps its PyTorch environment
TOOLS = ("unshare", "sshd", "ssh", "ssh-keygen", "rsync", "ip", "ss", "mount", "umount")
TOOL_DIRS = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def missing_prerequisite() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (namespaces, mounts and an sshd for root)"
    absent = [tool for tool in TOOLS if shutil.which(tool, path=TOOL_DIRS) is None]
    if absent:
        return f"missing {', '.join(absent)} (apt-get install openssh-server openssh-client rsync iproute2 util-linux)"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create namespaces here: {probe.stderr.strip()}"
    return None


PR_SET_PDEATHSIG = 1  # prctl(2)


def dies_with_parent() -> None:
    """A `preexec_fn`: the kernel kills this child (SIGKILL) when the process that started it dies, however it dies.
    A cycle killed from outside (a test's timeout) would otherwise leave its sandbox running: `unshare` outlives its
    parent, and its --kill-child only acts once `unshare` itself dies."""
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def isolated_command(argv: list[str]) -> list[str]:
    """`argv` run as the first process of a fresh sandbox (its exit ends everything inside)."""
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net", "--uts", "--propagation", "private", *argv]


def _sh(*args: str) -> None:
    subprocess.run(args, check=True)


def _overlay(lower: Path, target: Path, scratch: Path) -> None:
    (scratch / "upper").mkdir(parents=True)
    (scratch / "work").mkdir()
    _sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={scratch / 'upper'},workdir={scratch / 'work'}", str(target))


def host_paths(workspace: Path) -> list[Path]:
    """What the sandbox uses from the host at its own path: the workspace, the checkout, the environment
    and the installation its interpreter links to (a venv's base); each as given and, if a symlink leads
    elsewhere, where it leads."""
    given = [Path(os.path.abspath(path)) for path in (workspace, REPO, ENV_PREFIX, BASE_PREFIX)]
    return list(dict.fromkeys(given + [path.resolve() for path in given]))


def outermost(paths: Iterable[Path]) -> list[Path]:
    """Each path once, in the order given, without those inside another: a bind of that one brings them."""
    unique = list(dict.fromkeys(paths))
    return [p for p in unique if not any(p != q and p.is_relative_to(q) for q in unique)]


def cover_plan(target: Path, source: Path, needed: Iterable[Path], handles: Path = HANDLES) -> list[list[str]]:
    """The commands that mount `source` over `target` while every needed host path under `target` stays
    at its path: a handle on each (a bind under a tmpfs at `handles`), the cover, each handle bound back
    at its path, then the handles released (so `handles` shows the host's folder again)."""
    kept = [p for p in outermost(needed) if p != target and p.is_relative_to(target)]
    hidden = [str(p) for p in kept if p.is_relative_to(handles)]
    if hidden:
        raise RuntimeError(
            f"{', '.join(hidden)}: the sandbox keeps its handles in {handles}, which would hide it; move it out of {handles}"
        )
    slots = [handles / str(index) for index in range(len(kept))]
    take = [["mount", "-t", "tmpfs", "tmpfs", str(handles)]] if kept else []
    for path, slot in zip(kept, slots):
        take += [["mkdir", str(slot)], ["mount", "--bind", str(path), str(slot)]]
    cover = [["mkdir", "-p", str(target)], ["mount", "--bind", str(source), str(target)]]
    give_back = []
    for path, slot in zip(kept, slots):
        give_back += [["mkdir", "-p", str(path)], ["mount", "--bind", str(slot), str(path)], ["umount", str(slot)]]
    return take + cover + give_back + ([["umount", str(handles)]] if kept else [])


def _cover(target: Path, source: Path, needed: list[Path]) -> None:
    for command in cover_plan(target, source, needed):
        _sh(*command)


@dataclass(frozen=True)
class Sandbox:
    """The prepared inside of a sandbox; only valid in the process that called `prepare`."""

    workspace: Path
    home: Path
    ssh_key: Path


def prepare(workspace: Path) -> Sandbox:
    """Loopback, a private /tmp and /run, a fresh home, the environment as copy-on-write, the image's activate script."""
    assert os.getpid() == 1, "prepare() changes mounts: call it only as the first process of a sandbox"
    _sh("ip", "link", "set", "lo", "up")
    real_home = Path.home()
    pip_conf = real_home / ".config" / "pip" / "pip.conf"
    pip_text = pip_conf.read_text() if pip_conf.is_file() else None  # read before the home is replaced
    needed = host_paths(workspace)
    # /tmp: Ray's sessions, its config cache and ssh control sockets stay in workspace/tmp
    (workspace / "tmp").mkdir(mode=0o1777)
    _cover(Path("/tmp"), workspace / "tmp", needed)
    scratch = workspace / "tmpfs"
    scratch.mkdir()
    _sh("mount", "-t", "tmpfs", "tmpfs", str(scratch))  # overlay upper dirs cannot live on an overlay root
    (workspace / "run").mkdir()
    _cover(Path("/run"), workspace / "run", needed)
    Path("/run/sshd").mkdir(mode=0o755)

    home = workspace / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    key = workspace / "ssh_key"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (home / ".ssh" / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    (home / ".bashrc").write_text("")
    if pip_text is not None:  # this machine's package indexes, as an AMI would carry its own config
        (home / ".config" / "pip").mkdir(parents=True)
        (home / ".config" / "pip" / "pip.conf").write_text(pip_text)
    _cover(real_home, home, needed)

    # the environment (and a venv's base), visible again at its path: copy-on-write from here on
    for index, prefix in enumerate(outermost(Path(os.path.abspath(path)) for path in (ENV_PREFIX, BASE_PREFIX))):
        lower = workspace / f"env-lower-{index}"
        lower.mkdir()
        _sh("mount", "--bind", str(prefix), str(lower))
        _overlay(lower, prefix, scratch / f"env-{index}")
    _overlay(IMAGE_ENV.parent, IMAGE_ENV.parent, scratch / "opt")
    (IMAGE_ENV / "bin").mkdir(parents=True)
    (IMAGE_ENV / "bin" / "activate").write_text(f"export PATH={ENV_PREFIX / 'bin'}:$PATH\n")
    return Sandbox(workspace, real_home, key)


def start_machine(sandbox: Sandbox, ip: str, hostname: str) -> subprocess.Popen:
    """A stand-in machine: its own PID namespace and hostname (resolving to `ip`), sshd on `ip`:22."""
    hosts = sandbox.workspace / f"hosts-{hostname}"
    hosts.write_text(f"127.0.0.1 localhost\n{ip} {hostname}\n")
    log = open(sandbox.workspace / f"sshd-{hostname}.log", "w")
    process = subprocess.Popen(
        [
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            sys.executable,
            "-m",
            "cluster.sandbox",
            ip,
            hostname,
            str(hosts),
        ],
        stdout=log,
        stderr=log,
        cwd=Path(__file__).resolve().parents[1],
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection((ip, 22), timeout=1).close()
            return process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"sshd on {ip} did not start: {(sandbox.workspace / f'sshd-{hostname}.log').read_text()[-2000:]}")
            time.sleep(0.2)


def stop_machine(process: subprocess.Popen) -> None:
    """Ends the machine's first process, and with it every process of that machine.

    SIGKILL: `unshare` ignores SIGTERM while it waits, and its --kill-child passes the kill on."""
    process.kill()
    process.wait(timeout=30)


def _machine_main(ip: str, hostname: str, hosts: str) -> int:
    """First process of a stand-in machine: name it, run its sshd, reap whatever gets orphaned."""
    socket.sethostname(hostname)
    _sh("mount", "--bind", hosts, "/etc/hosts")
    sshd = subprocess.Popen(
        [shutil.which("sshd", path=TOOL_DIRS) or "sshd", "-D", "-e", "-o", f"ListenAddress={ip}", "-o", "PidFile=none", "-o", "UsePAM=no"]
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a namespace's first process ignores unhandled signals
    while True:
        pid, _ = os.wait()
        if pid == sshd.pid:
            return 1


if __name__ == "__main__":
    sys.exit(_machine_main(*sys.argv[1:4]))
