"""Stand-in machines for a cluster on this one host, isolated so that Ray's `ray stop` can only hit them.

`ray up` and `ray down` run `ray stop`, which kills every Ray process of the user on a host: run on
this machine as is, it would kill any other Ray here (a user's sweep, another test). So the whole
launch runs inside one private PID, mount, UTS and network namespace (only loopback in it), and each
stand-in machine is a nested PID+mount+UTS namespace with its own sshd on its own 127.0.0.x address
and its own hostname: a `ray stop` over ssh stops that machine's processes and nothing else. When
the sandbox's first process exits, the kernel ends every process inside it.

Inside, the machines share a fresh home (so ~/.ray, ~/.ssh and what `ray up` copies stay out of the
real one) and a copy-on-write overlay of this Python environment (so `pip install -e` in the setup
commands changes nothing outside). `/opt/pytorch/bin/activate` puts that environment on PATH, as it
does on the AWS Deep Learning AMI: the commands of `cluster.yaml` then run unchanged.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.local import REPO

ENV_PREFIX = Path(sys.prefix)
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


def isolated_command(argv: list[str]) -> list[str]:
    """`argv` run as the first process of a fresh sandbox (its exit ends everything inside)."""
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--net", "--uts", "--propagation", "private", *argv]


def _sh(*args: str) -> None:
    subprocess.run(args, check=True)


def _overlay(lower: Path, target: Path, scratch: Path) -> None:
    (scratch / "upper").mkdir(parents=True)
    (scratch / "work").mkdir()
    _sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower},upperdir={scratch / 'upper'},workdir={scratch / 'work'}", str(target))


def _private_tmp(workspace: Path) -> None:
    """/tmp becomes workspace/tmp (Ray's sessions, its config cache and ssh control sockets stay
    there), with the workspace and the checkout still at their paths when they lie under /tmp
    (a CI clone may)."""
    handle = Path("/mnt")
    _sh("mount", "-t", "tmpfs", "tmpfs", str(handle))
    kept = [workspace, REPO]
    for index, path in enumerate(kept):
        (handle / str(index)).mkdir()
        _sh("mount", "--bind", str(path), str(handle / str(index)))
    (workspace / "tmp").mkdir(mode=0o1777)
    _sh("mount", "--bind", str(workspace / "tmp"), "/tmp")
    for index, path in enumerate(kept):
        if path.is_relative_to("/tmp"):
            path.mkdir(parents=True, exist_ok=True)
            _sh("mount", "--bind", str(handle / str(index)), str(path))


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
    _private_tmp(workspace)
    scratch = workspace / "tmpfs"
    scratch.mkdir()
    _sh("mount", "-t", "tmpfs", "tmpfs", str(scratch))  # overlay upper dirs cannot live on an overlay root
    (workspace / "run").mkdir()
    _sh("mount", "--bind", str(workspace / "run"), "/run")
    Path("/run/sshd").mkdir(mode=0o755)

    home = workspace / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    key = workspace / "ssh_key"
    _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key))
    (home / ".ssh" / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (home / ".ssh" / "authorized_keys").chmod(0o600)
    (home / ".bashrc").write_text("")
    pip_conf = real_home / ".config" / "pip" / "pip.conf"
    if pip_conf.is_file():  # this machine's package indexes, as an AMI would carry its own config
        (home / ".config" / "pip").mkdir(parents=True)
        shutil.copy(pip_conf, home / ".config" / "pip" / "pip.conf")

    env_lower = workspace / "env-lower"
    env_lower.mkdir()
    _sh("mount", "--bind", str(ENV_PREFIX), str(env_lower))  # a handle on it before the home is replaced
    _sh("mount", "--bind", str(home), str(real_home))
    ENV_PREFIX.mkdir(parents=True, exist_ok=True)  # its mount point, when the environment lives in the home
    _overlay(env_lower, ENV_PREFIX, scratch / "env")
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
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--uts", "--propagation", "private",
         sys.executable, "-m", "cluster.sandbox", ip, hostname, str(hosts)],
        stdout=log, stderr=log, cwd=Path(__file__).resolve().parents[1],
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
    sshd = subprocess.Popen([shutil.which("sshd", path=TOOL_DIRS) or "sshd", "-D", "-e", "-o", f"ListenAddress={ip}", "-o", "PidFile=none", "-o", "UsePAM=no"])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a namespace's first process ignores unhandled signals
    while True:
        pid, _ = os.wait()
        if pid == sshd.pid:
            return 1


if __name__ == "__main__":
    sys.exit(_machine_main(*sys.argv[1:4]))
