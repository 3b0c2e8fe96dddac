"""A one-node SLURM cluster on this machine for the tests (munge, slurmctld and slurmd of Debian's slurm-wlm,
configured in a temporary folder on ports of their own), or the reason it cannot start here. Not collected."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["SlurmCluster"]

_DAEMONS = ("munged", "slurmctld", "slurmd", "srun")


class SlurmCluster:
    """Start with :meth:`start` (None, or why it cannot run), stop with :meth:`stop`; ``environment`` points
    ``srun`` at it."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="conformance-slurm-"))
        self.environment = {"SLURM_CONF": str(self.folder / "slurm.conf")}
        self._started: list[Path] = []

    def start(self) -> str | None:
        missing = [name for name in _DAEMONS if shutil.which(name) is None
                   and not Path("/usr/sbin", name).exists()]
        if missing:
            return f"SLURM is not installed here ({', '.join(missing)} missing; Debian's package is slurm-wlm)"
        if os.geteuid() != 0:
            return "starting munged, slurmctld and slurmd needs root"
        self._write_config()
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/run/munge/munge.socket.2").exists():
            self._run("munged", "--force")
        for daemon in ("slurmctld", "slurmd"):
            self._run(daemon)
            self._started.append(self.folder / f"{daemon}.pid")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            probe = subprocess.run(["sinfo", "-h", "-o", "%T"], env={**os.environ, **self.environment},
                                   capture_output=True, text=True, check=False)
            if probe.stdout.strip() == "idle":
                return None
            time.sleep(0.5)
        return f"the cluster did not become idle in 30 s: {probe.stdout} {probe.stderr}".strip()

    def stop(self) -> None:
        for pid_file in self._started:
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), 15)
                except (ProcessLookupError, ValueError):
                    pass
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, daemon: str, *args: str) -> None:
        path = shutil.which(daemon) or f"/usr/sbin/{daemon}"
        subprocess.run([path, *args], env={**os.environ, **self.environment}, check=True, capture_output=True)

    def _write_config(self) -> None:
        folder, host = self.folder, socket.gethostname()
        for name in ("state", "spool"):
            (folder / name).mkdir()
        (folder / "slurm.conf").write_text("\n".join([
            "ClusterName=conformance", f"SlurmctldHost={host}", "SlurmctldPort=16817", "SlurmdPort=16818",
            "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SlurmUser=root",
            f"SlurmctldPidFile={folder}/slurmctld.pid", f"SlurmdPidFile={folder}/slurmd.pid",
            f"StateSaveLocation={folder}/state", f"SlurmdSpoolDir={folder}/spool",
            f"SlurmctldLogFile={folder}/slurmctld.log", f"SlurmdLogFile={folder}/slurmd.log",
            "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
            "ReturnToService=2", "MpiDefault=none", f"NodeName={host} CPUs={os.cpu_count()} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4", ""]))
