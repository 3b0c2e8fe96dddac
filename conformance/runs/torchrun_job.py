"""The ranks of one run started by one launch of torchrun (or the adopter's command template around it).

The launch behaves as the kit's own launcher does: every rank writes its log and its output to per-rank files named
by its ``RANK`` in the run's folder (which every node of a cluster launch must reach); the first rank to fail, or
the deadline, ends the whole launch: the torchrun agent and every process below it, each worker in its own session
included, so no process is left behind; a rank that ends itself by a signal as planned (``interruption="kill"``)
is no failure; what the launcher itself printed is shown for a rank that wrote nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from conformance.runs.launchers import Launcher
from conformance.runs.processes import RankExit, RankJob, output_tail, rank_environment

__all__ = ["TorchrunJob"]

#: Variables of the test process that would mislead torchrun's workers (torchrun sets its own).
_RENDEZVOUS_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK",
                         "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")
#: Seconds a launch has to end on SIGTERM before it is killed.
_GRACE_S = 5.0


class TorchrunJob(RankJob):
    """One run's ``world_size`` ranks as one torchrun launch; :meth:`poll` until it returns True."""

    def __init__(self, module: str, payload: dict[str, Any], world_size: int, *, deadline_s: float,
                 launcher: Launcher) -> None:
        self.launcher = launcher
        super().__init__(module, payload, world_size, deadline_s=deadline_s, distributed=True)

    def _start_ranks(self, port: int) -> None:
        for rank in range(self.world_size):
            for stale in (self._result_path(rank), self._planned_path(rank), self._output_path(rank)):
                stale.unlink(missing_ok=True)
        spec = self.folder / "spec.json"
        spec.write_text(self._spec_text(str(self.folder / "result{rank}.json")))
        env = {name: value for name, value in os.environ.items() if name not in _RENDEZVOUS_VARIABLES}
        env.update(rank_environment(self.folder / "planned-exit{rank}", self.deadline_s,
                                    output=self.folder / "output{rank}.txt"))
        command = self.launcher.command(python=sys.executable, torchrun_args=["--max-restarts=0", "-m", self.module,
                                                                              str(spec)],
                                        nproc=self.world_size, port=port, run_id=uuid.uuid4().hex,
                                        host=self.launcher.rendezvous_host)
        with open(self._launcher_output_path(), "wb") as output:
            self._agent = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        self._processes = [self._agent]

    def poll(self) -> bool:
        """Look at the launch once; end it when a rank has failed or at the deadline. True when it has ended."""
        if self._exits is not None:
            return True
        if self._agent.poll() is None:
            failed = next((rank for rank in range(self.world_size) if self._reported_failure(rank)), None)
            if failed is not None:
                self._end_launch(f"was stopped by the kit because rank {failed} failed first")
            elif time.monotonic() - self._started > self.deadline_s:
                self._end_launch(f"was still running at the deadline of {self.deadline_s:.0f} s and was killed with "
                                 "the whole torchrun launch (a hung collective or a run far slower than expected)")
            else:
                return False
        _kill_tree(self._agent.pid)  # what is left in the launch's process group (a template's shell, its agents)
        if self._restarts_for_port():
            return False
        self._exits = [self._exit(rank) for rank in range(self.world_size)]
        return self._finished()

    def kill(self, reason: str) -> None:
        self._end_launch(reason)
        self._finished()

    def _end_launch(self, reason: str) -> None:
        """Stop the launch, noting ``reason`` for the ranks that have not ended: SIGTERM first (torchrun's agent then
        stops its workers, ``srun`` its step on every node), SIGKILL for the agent and every process below it after
        :data:`_GRACE_S`."""
        for rank in range(self.world_size):
            if self._result(rank) is None and not self._planned_path(rank).exists():
                self._stop_reason.setdefault(rank, reason)
        below = _descendants(self._agent.pid)  # found now: once the agent is gone they belong to init
        try:
            os.killpg(self._agent.pid, signal.SIGTERM)
            self._agent.wait(timeout=_GRACE_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        _kill_tree(self._agent.pid, below)
        self._agent.wait()

    def _reported_failure(self, rank: int) -> bool:
        result = self._result(rank)
        return result is not None and bool(result.get("error"))

    def _failed(self, rank: int) -> bool:
        if self._planned_path(rank).exists():
            return False
        result = self._result(rank)
        return result is None or bool(result.get("error"))

    def _exit(self, rank: int) -> RankExit:
        """How rank ``rank`` ended; one the kit stopped is reported as stopped (with its output), whatever log it
        wrote on its way out (Lightning's SIGTERM handler fails its collectives)."""
        planned = self._planned_path(rank).exists()
        stopped = self._stop_reason.get(rank)
        result = None if stopped else self._result(rank)
        if result is not None:
            returncode = 0
        elif planned:
            returncode = -int(self._planned_path(rank).read_text() or signal.SIGKILL)
        else:
            returncode = self._agent.returncode or -signal.SIGKILL
        return RankExit(rank, returncode, self._output(rank), result, planned, stopped)

    def _output(self, rank: int) -> str:
        """The rank's output tail; where it printed nothing (it died before its entry point ran), the launcher's."""
        own = super()._output(rank)
        if own.strip():
            return own
        return f"(rank {rank} printed nothing; the launcher's output:)\n{output_tail(self._launcher_output_path())}"

    def _launcher_output_path(self) -> Path:
        return self.folder / "launcher.txt"


def _kill_tree(pid: int, below: list[int] | None = None) -> None:
    """SIGKILL ``pid`` and every process below it (``below``, else found now), each with its process group
    (torchrun starts every worker in a session of its own, so killing the agent's group alone would orphan them)."""
    for process in [*(_descendants(pid) if below is None else below), pid]:
        try:
            os.killpg(os.getpgid(process), signal.SIGKILL)
            os.kill(process, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid``, read from ``/proc`` (children before their own children are killed)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, frontier = [], [pid]
    while frontier:
        children = [child for parent in frontier for child in parents.get(parent, [])]
        found += children
        frontier = children
    return found
