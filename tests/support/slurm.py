"""A single-node Slurm cluster on this machine: munged, slurmctld and slurmd (Debian slurm-wlm).

Everything the cluster writes (munge key and socket, slurm.conf, controller state, spool, logs,
job history) lives under one state directory; the daemons listen on free ports of 127.0.0.1,
so two clusters (two test sessions) can run side by side and none touches a system-wide
configuration. The node is this machine (its short hostname, its CPUs), configured as the
single-node recipe needs: `proctrack/linuxproc`, `task/none`, `select/cons_tres`, no cgroup.conf.

Clients find the cluster through `SLURM_CONF` (see `SlurmCluster.env`). Inside a job,
snakemake's Slurm job-step executor drops every `SLURM_*` variable before it calls `srun`; the
cluster's `bin/` directory (first on the `PATH` from `env`) therefore holds an `srun` that sets
`SLURM_CONF` again and runs the real one. A cluster whose nodes read /etc/slurm/slurm.conf (or
run configless) needs no such thing.

Used by the cluster tests (`SlurmCluster` as a context manager, daemons tied to the test
process) and by `dev/slurm.sh` (`python3 tests/support/slurm.py start|stop|status|env DIR`,
daemons detached, stopped later through their pid files).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("mungekey", "munge", "unmunge", "sbatch", "srun", "squeue", "scontrol", "scancel")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CANCEL_TIMEOUT_S = 15.0
PARTITION = "main"
# Finished jobs stay visible to squeue/scontrol this long (the tests read them after the run).
MIN_JOB_AGE_S = 3600


class SlurmUnavailable(RuntimeError):
    """Why a cluster cannot be started on this machine."""


def missing_tools() -> list[str]:
    return [tool for tool in (*DAEMONS, *CLIENTS) if shutil.which(tool) is None]


def unavailable_reason() -> str | None:
    """A sentence saying why no cluster can start here, or None."""
    if missing := missing_tools():
        return f"not installed: {', '.join(missing)} (Debian packages slurm-wlm and munge)"
    if os.geteuid() != 0:
        return "the Slurm daemons of a single-node cluster must be started as root"
    return None


def node_name() -> str:
    return socket.gethostname().split(".")[0]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """Runs in the child before exec: get SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _memory_mb() -> int:
    """Memory the node offers to jobs: 90% of MemTotal (slurmd drains a node that has less
    than its configured RealMemory)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 9 // 10 // 1024
    return 1024


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not collected it yet
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class SlurmCluster:
    """munged + slurmctld + slurmd for one node, configured and logged under ``state_dir``.

    ``tie_to_parent``: the daemons get SIGTERM when this process dies (tests); otherwise they
    are detached and outlive it (``dev/slurm.sh``), and ``stop()`` finds them by pid file.
    """

    def __init__(self, state_dir: Path, *, tie_to_parent: bool = True) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.tie_to_parent = tie_to_parent
        self.conf_dir = self.state_dir / "etc"
        self.conf_file = self.conf_dir / "slurm.conf"
        self.bin_dir = self.state_dir / "bin"
        self.munge_dir = self.state_dir / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.log_dir = self.state_dir / "log"
        self.pid_dir = self.state_dir / "run"
        self.history_file = self.log_dir / "jobcomp.log"
        self.node = node_name()
        self.cpus = os.cpu_count() or 1
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    # -- what clients need ----------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Variables that point Slurm clients (and jobs' nested srun) at this cluster."""
        return {
            "SLURM_CONF": str(self.conf_file),
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def client(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (squeue, scontrol, …) against this cluster."""
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.environ(), timeout=timeout
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (JobState, JobName, WorkDir, Comment, ExitCode, …)."""
        done = self.client("scontrol", "--oneliner", "show", "job", job_id)
        if done.returncode != 0:
            return {}
        return _key_values(done.stdout)

    def history(self) -> dict[str, dict[str, str]]:
        """Every finished job of this cluster (jobcomp/filetxt records), by job id."""
        if not self.history_file.exists():
            return {}
        records = (_key_values(line) for line in self.history_file.read_text().splitlines())
        return {record["JobId"]: record for record in records if "JobId" in record}

    def queued(self) -> list[str]:
        """Ids of the jobs still pending or running."""
        done = self.client("squeue", "--noheader", "--format=%i")
        return done.stdout.split() if done.returncode == 0 else []

    # -- setup --------------------------------------------------------------------------------
    def _write_config(self) -> None:
        for directory in (self.conf_dir, self.bin_dir, self.log_dir, self.pid_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for name in ("state", "spool"):
            (self.state_dir / name).mkdir(exist_ok=True)
        lines = {
            "ClusterName": "hangar",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "StateSaveLocation": self.state_dir / "state",
            "SlurmdSpoolDir": self.state_dir / "spool",
            "SlurmctldPidFile": self.pid_dir / "slurmctld.own.pid",
            "SlurmdPidFile": self.pid_dir / "slurmd.own.pid",
            "SlurmctldLogFile": self.log_dir / "slurmctld.log",
            "SlurmdLogFile": self.log_dir / "slurmd.log",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core",
            "SchedulerType": "sched/backfill",
            "MpiDefault": "none",
            "AccountingStorageType": "accounting_storage/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "JobCompType": "jobcomp/filetxt",
            "JobCompLoc": self.history_file,
            "ReturnToService": 2,
            "MinJobAge": MIN_JOB_AGE_S,
            "KillWait": 5,
        }
        text = "".join(f"{key}={value}\n" for key, value in lines.items())
        text += (
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
            f"RealMemory={_memory_mb()} State=UNKNOWN\n"
            f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n"
        )
        self.conf_file.write_text(text)
        srun = shutil.which("srun")
        wrapper = self.bin_dir / "srun"
        wrapper.write_text(
            "#!/bin/sh\n# srun for this cluster, even where the caller dropped SLURM_CONF\n"
            f"SLURM_CONF={shlex.quote(str(self.conf_file))} exec {shlex.quote(str(srun))} "
            '"$@"\n'
        )
        wrapper.chmod(0o755)

    def _make_munge_key(self) -> Path:
        self.munge_dir.mkdir(parents=True, exist_ok=True)
        self.munge_dir.chmod(0o755)  # the socket's directory must be reachable
        key = self.munge_dir / "munge.key"
        if not key.exists():
            subprocess.run(
                ["mungekey", "--create", f"--keyfile={key}"], check=True, capture_output=True
            )
        key.chmod(0o600)
        return key

    def _launch(self, name: str, args: list[str]) -> None:
        with (self.log_dir / f"{name}.out").open("ab") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.environ(),
                preexec_fn=_die_with_parent if self.tie_to_parent else None,
                start_new_session=not self.tie_to_parent,
            )
        self._procs[name] = proc
        (self.pid_dir / f"{name}.pid").write_text(f"{proc.pid}\n")

    def _wait(self, what: str, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            proc = self._procs[name]
            if proc.poll() is not None:
                raise SlurmUnavailable(f"{name} exited with status {proc.returncode}")
            if ready():
                return
            time.sleep(0.2)
        raise SlurmUnavailable(f"{what} not ready after {START_TIMEOUT_S:.0f}s")

    def _munge_works(self) -> bool:
        sock = f"--socket={self.munge_socket}"
        if not self.munge_socket.exists():
            return False
        credential = subprocess.run(["munge", sock, "--no-input"], capture_output=True)
        if credential.returncode != 0:
            return False
        decoded = subprocess.run(["unmunge", sock], input=credential.stdout, capture_output=True)
        return decoded.returncode == 0

    def _controller_up(self) -> bool:
        done = self.client("scontrol", "ping", timeout=10)
        return done.returncode == 0 and " is UP" in done.stdout

    def _node_idle(self) -> bool:
        done = self.client("sinfo", "--noheader", "--Node", "--format=%T", timeout=10)
        return done.returncode == 0 and done.stdout.strip() in ("idle", "mixed", "allocated")

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SlurmCluster:
        if reason := unavailable_reason():
            raise SlurmUnavailable(reason)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            key = self._make_munge_key()
            self._write_config()
            munge = self.munge_dir
            self._launch(
                "munged",
                ["munged", "--foreground", "--force", f"--socket={self.munge_socket}"]
                + [f"--key-file={key}", f"--log-file={self.log_dir / 'munged.log'}"]
                + [f"--pid-file={munge / 'munged.pid'}", f"--seed-file={munge / 'seed'}"],
            )
            self._wait("munged", "munged", self._munge_works)
            self._launch("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf_file)])
            self._wait("slurmctld", "slurmctld", self._controller_up)
            self._launch("slurmd", ["slurmd", "-D", "-N", self.node, "-f", str(self.conf_file)])
            self._wait(f"node {self.node}", "slurmd", self._node_idle)
        except (SlurmUnavailable, OSError, subprocess.SubprocessError) as error:
            logs = self.log_tails()
            self.stop()
            raise SlurmUnavailable(f"single-node Slurm did not start: {error}\n{logs}") from None
        return self

    def stop(self) -> None:
        """Cancel what is still queued, stop the daemons (slurmd first), leave the logs."""
        if self._alive("slurmctld") and (jobs := self.queued()):
            self.client("scancel", *jobs)
            deadline = time.monotonic() + CANCEL_TIMEOUT_S
            while self.queued() and time.monotonic() < deadline:
                time.sleep(0.2)
        for name in reversed(DAEMONS):
            self._terminate(name)

    def running(self) -> bool:
        return all(self._alive(name) for name in DAEMONS)

    def _pid(self, name: str) -> int | None:
        if name in self._procs:
            return self._procs[name].pid
        with contextlib.suppress(OSError, ValueError):
            return int((self.pid_dir / f"{name}.pid").read_text())
        return None

    def _alive(self, name: str) -> bool:
        if name in self._procs:
            return self._procs[name].poll() is None
        pid = self._pid(name)
        return pid is not None and _alive(pid) and _is_daemon(pid, name)

    def _terminate(self, name: str) -> None:
        pid = self._pid(name)
        if pid is not None and self._alive(name):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while self._alive(name) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not self._alive(name):
                    break
        if name in self._procs:
            self._procs.pop(name).wait()
        (self.pid_dir / f"{name}.pid").unlink(missing_ok=True)

    def log_tails(self, lines: int = 8) -> str:
        parts = []
        for log in sorted(self.log_dir.glob("*")) if self.log_dir.exists() else []:
            if log.is_file() and log != self.history_file:
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log}\n" + "\n".join(tail))
        return "\n".join(parts)

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SlurmCluster {self.node} {self.state_dir}>"


def _is_daemon(pid: int, name: str) -> bool:
    """The pid (from a pid file) still belongs to that daemon, not to a reused pid."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def _key_values(text: str) -> dict[str, str]:
    """`Key=Value Key=Value …` as printed by `scontrol --oneliner` and jobcomp/filetxt."""
    pairs = (field.split("=", 1) for field in text.split() if "=" in field)
    return {key: value for key, value in pairs}


# -- command line (dev/slurm.sh) --------------------------------------------------------------


def _print_env(cluster: SlurmCluster) -> None:
    for key, value in cluster.env.items():
        print(f"export {key}={shlex.quote(value)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("action", choices=["start", "stop", "status", "env"])
    parser.add_argument("state_dir", type=Path)
    args = parser.parse_args(argv)
    cluster = SlurmCluster(args.state_dir, tie_to_parent=False)
    if args.action == "start":
        if cluster.running():
            print(f"already running: {cluster.state_dir}", file=sys.stderr)
        else:
            cluster.stop()  # whatever is left of an earlier start
            try:
                cluster.start()
            except SlurmUnavailable as error:
                print(error, file=sys.stderr)
                return 1
        _print_env(cluster)
    elif args.action == "stop":
        cluster.stop()
    elif args.action == "status":
        up = cluster.running()
        print(f"{'running' if up else 'stopped'}: {cluster.state_dir}")
        if up:
            print(cluster.client("sinfo").stdout, end="")
            print(cluster.client("squeue").stdout, end="")
        return 0 if up else 3
    else:
        _print_env(cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
