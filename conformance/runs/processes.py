"""Run one rank of a run per fresh Python process, joined by torch.distributed's env:// rendezvous.

The parent writes each rank a JSON spec and starts ``python -m MODULE SPEC``; the module's ``__main__`` calls
:func:`recipe_rank_main`, which imports the recipe class by name, runs the rank and writes its log as JSON. Ranks
get torchelastic-style variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``), so
Lightning joins them with its own environment and never re-executes the test command.

The launcher cannot hang or leak: it polls every rank; on the first failure, or at the deadline, it kills the
others (with their process groups: loader workers too) and reports every rank's exit code and the tail of its
output, which goes to a file, never a pipe that could fill. Processes get a short process-group timeout
(:data:`PROCESS_GROUP_TIMEOUT_ENV`), a master port drawn outside the ephemeral range (retried if taken), and the
temporary folder is removed only once every child is gone.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from conformance.errors import ConformanceSetupError
from conformance.runs.forkserver import EXIT_UNKNOWN, PROGRESS_FD_ENV, ForkedProcess, fork_server
from conformance.runs.launchers import work_folder

__all__ = ["PROCESS_GROUP_TIMEOUT_ENV", "PROGRESS_FD_ENV", "RANK_PROCESS_ENV", "RankJob", "RankLog", "SimulatedPreemption",
           "exit_by_signal_as_planned", "failure_text", "finish_jobs", "function_name", "importable_name",
           "output_tail", "process_group_timeout", "rank_environment", "recipe_rank_main"]

#: Seconds a rank waits in a collective for its peers before failing (gloo's default is 30 minutes).
PROCESS_GROUP_TIMEOUT_ENV = "CONFORMANCE_PROCESS_GROUP_TIMEOUT"
_DEFAULT_PROCESS_GROUP_TIMEOUT = 60.0
#: Where a rank that ends itself by a signal on purpose leaves a note first (see exit_by_signal_as_planned).
_PLANNED_EXIT_ENV = "CONFORMANCE_PLANNED_EXIT_FILE"
#: Where a rank process started by torchrun sends its output (a path pattern holding ``{rank}``).
_RANK_OUTPUT_ENV = "CONFORMANCE_RANK_OUTPUT"
#: Set to "1" in every rank process the kit launches (code that must never run in the test process checks it).
RANK_PROCESS_ENV = "CONFORMANCE_RANK_PROCESS"
#: A failed rank's report shows this much of the end of its output.
OUTPUT_TAIL_CHARS = 4000
_PORT_ATTEMPTS = 3
#: The module name a script run as ``__main__`` gets in rank processes (multiprocessing's spawn uses the same).
_SCRIPT_MODULE = "__mp_main__"
#: Its own generator: drawing a port must not move the global RNG of a run in this process.
_PORTS = random.SystemRandom()


@dataclass
class RankLog:
    """What one rank of a run did; subclasses add what their kind of run observes. JSON-serialisable."""

    rank: int = 0
    error: str | None = None
    #: The qualified names of the error's class and its bases, so checks can tell a documented error from others.
    error_types: list[str] = field(default_factory=list)
    killed_by_signal: int | None = None
    #: When the error was caught (seconds since the epoch: comparable between the ranks of one machine).
    failed_at: float | None = None
    #: ``file:qualified function`` of every frame the error passed through, outermost first, so checks can tell
    #: where it was raised (a recipe's own refusal, not its type).
    raised_through: list[str] = field(default_factory=list)

    def record_failure(self, exc: BaseException) -> None:
        """Keep ``exc``, raised by the rank's run (call it inside the ``except`` block)."""
        self.failed_at = time.time()
        self.error = failure_text(exc)
        self.error_types = [f"{cls.__module__}.{cls.__qualname__}" for cls in type(exc).__mro__]
        self.raised_through = [function_name(frame.f_code) for frame, _ in traceback.walk_tb(exc.__traceback__)]


def function_name(code: Any) -> str:
    """``file:qualified name`` of a function's code object, as :attr:`RankLog.raised_through` lists frames."""
    return f"{code.co_filename}:{code.co_qualname}"


def failure_text(exc: BaseException) -> str:
    """How a run's failure is reported: the exception in one line, then the traceback being handled; a set-up error
    found while the run started (a hook's wrong call of the kit) as its message alone, which names the fix."""
    if isinstance(exc, ConformanceSetupError):
        return f"set-up error: {exc}"
    return f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"


def process_group_timeout() -> float:
    """Seconds a collective may wait in a kit-launched rank (the launcher sets it; 60 s elsewhere)."""
    return float(os.environ.get(PROCESS_GROUP_TIMEOUT_ENV, _DEFAULT_PROCESS_GROUP_TIMEOUT))


class SimulatedPreemption(RuntimeError):
    """Raised by the kit right after the interrupted run's checkpoint, as a preempted job would die."""


def exit_by_signal_as_planned(signum: int = signal.SIGKILL) -> NoReturn:
    """End this rank process at once by ``signum``, as a preempted job dies, noting first that it was planned."""
    planned = os.environ.get(_PLANNED_EXIT_ENV)
    if planned is None:
        raise RuntimeError("exit_by_signal_as_planned() is for kit-launched rank processes only")
    Path(_for_this_rank(planned)).write_text(str(signum))
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signum)
    raise AssertionError("unreachable: the process was signalled")


Log = TypeVar("Log", bound=RankLog)
Plan = TypeVar("Plan")


@dataclass(frozen=True)
class RankExit:
    """How one rank's process ended: its exit code, output tail, JSON result (None if it wrote none), whether it
    ended itself by a signal as planned, and why the kit stopped it (None if it ended on its own)."""

    rank: int
    returncode: int
    output: str
    result: dict[str, Any] | None
    planned: bool
    stopped_by_kit: str | None

    def as_log(self, log_type: type[Log]) -> Log:
        """The rank's log: its own if it wrote one, else one that says how the process ended."""
        signum = -self.returncode if self.returncode < 0 else None
        if self.result is not None:
            log = log_type(**self.result)
            if self.returncode != 0 and not self.planned and not log.error:
                log.killed_by_signal = signum
                log.error = (f"rank {self.rank} wrote its log but then "
                             f"{self.stopped_by_kit or 'exited with ' + _describe_exit(self.returncode)}; the end of its "
                             f"output:\n{self.output}")
            return log
        if self.planned:
            return log_type(rank=self.rank, killed_by_signal=signum)
        how = self.stopped_by_kit or f"exited with {_describe_exit(self.returncode)} and wrote no log"
        return log_type(rank=self.rank, killed_by_signal=signum,
                        error=f"rank {self.rank} {how}; the end of its output:\n{self.output}")


class RankJob:
    """The processes of one run, one per rank, started at once; :meth:`poll` until it returns True.

    ``payload`` (JSON-serialisable) is given to every rank with its ``rank`` and the path for its ``output``.
    """

    def __init__(self, module: str, payload: dict[str, Any], world_size: int, *, deadline_s: float,
                 distributed: bool | None = None) -> None:
        self.module = module
        self.payload = payload
        self.world_size = world_size
        self.deadline_s = deadline_s
        self.distributed = world_size > 1 if distributed is None else distributed
        self.folder = work_folder("conformance-ranks-")
        self._attempts = 0
        self._exits: list[RankExit] | None = None
        self._start()

    def _start(self) -> None:
        self._attempts += 1
        self._started = time.monotonic()
        self._stop_reason: dict[int, str] = {}
        port = _free_port()
        self._processes: list[subprocess.Popen[bytes] | ForkedProcess] = []
        try:
            self._start_ranks(port)
        except BaseException:
            self.kill("was killed because its peers could not all be started")
            raise

    def _start_ranks(self, port: int) -> None:
        for rank in range(self.world_size):
            for stale in (self._result_path(rank), self._planned_path(rank)):
                stale.unlink(missing_ok=True)
            spec = self.folder / f"rank{rank}.json"
            spec.write_text(self._spec_text(str(self._result_path(rank)), rank))
            env = {**os.environ, **rank_environment(self._planned_path(rank), self.deadline_s)}
            if self.distributed:
                env.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(self.world_size),
                            "RANK": str(rank), "LOCAL_RANK": str(rank), "GROUP_RANK": "0", "NODE_RANK": "0",
                            "LOCAL_WORLD_SIZE": str(self.world_size)})
            self._processes.append(_start_process(self.module, str(spec), env, self._output_path(rank),
                                                  show_progress=rank == 0 and bool(os.environ.get("CONFORMANCE_PROGRESS"))))

    def _spec_text(self, output: str, rank: int | None = None) -> str:
        """A rank's spec: the payload, where its log goes and its rank (None: the launcher's ``RANK``)."""
        return json.dumps({**self.payload, "output": output, **({} if rank is None else {"rank": rank})})

    def poll(self) -> bool:
        """Look at every rank once; stop the others on a failure or at the deadline. True when all have ended."""
        if self._exits is not None:
            return True
        failed = [rank for rank, process in enumerate(self._processes)
                  if process.poll() is not None and self._failed(rank)]
        if failed:
            self._stop_others(f"was stopped by the kit because rank {failed[0]} failed first")
        elif time.monotonic() - self._started > self.deadline_s:
            self._stop_others(f"was still running at the deadline of {self.deadline_s:.0f} s and was killed "
                              "(a hung collective or a run far slower than expected)")
        if any(process.poll() is None for process in self._processes):
            return False
        for process in self._processes:  # what a rank left running (a library's multiprocessing Manager, say)
            with_group(process, signal.SIGKILL)
        if self._restarts_for_port():
            return False
        self._exits = [self._exit(rank) for rank in range(self.world_size)]
        return self._finished()

    def _finished(self) -> bool:
        """Remove the job's folder once every rank has ended; True."""
        shutil.rmtree(self.folder, ignore_errors=True)
        return True

    def exits(self) -> list[RankExit]:
        """How every rank ended (after :meth:`poll` returned True)."""
        if self._exits is None:
            raise RuntimeError("the job is still running: poll() until it returns True")
        return self._exits

    def kill(self, reason: str) -> None:
        """Stop every rank still running, saying ``reason``, and wait for them (e.g. when the caller is interrupted)."""
        self._stop_others(reason)
        for process in self._processes:
            process.wait()
        self._finished()

    def _failed(self, rank: int) -> bool:
        """Whether rank ``rank``, which has ended, failed: a non-zero exit not planned, or a log with an error."""
        process = self._processes[rank]
        if process.returncode != 0:
            return not self._planned_path(rank).exists()
        result = self._result(rank)
        return result is None or bool(result.get("error"))

    def _stop_others(self, reason: str) -> None:
        for rank, process in enumerate(self._processes):
            if process.poll() is None:
                self._stop_reason[rank] = reason
                with_group(process, signal.SIGKILL)
        for process in self._processes:
            process.wait()

    def _restarts_for_port(self) -> bool:
        """Start the job again (True) if it failed because its port was taken meanwhile and attempts remain."""
        if self._port_was_taken() and self._attempts < _PORT_ATTEMPTS:
            self._start()
            return True
        return False

    def _port_was_taken(self) -> bool:
        """Whether a rank failed because the rendezvous port was taken meanwhile (then the job starts again)."""
        return self.distributed and any(
            self._failed(rank) and "address already in use" in (self._output(rank) + str(self._result(rank))).lower()
            for rank in range(self.world_size))

    def _exit(self, rank: int) -> RankExit:
        return RankExit(rank, self._processes[rank].returncode, self._output(rank), self._result(rank),
                        self._planned_path(rank).exists(), self._stop_reason.get(rank))

    def _result(self, rank: int) -> dict[str, Any] | None:
        path = self._result_path(rank)
        return json.loads(path.read_text()) if path.exists() else None

    def _output(self, rank: int) -> str:
        """The tail of what rank ``rank`` printed; empty when it was stopped before it opened its output file (a
        forked rank opens it after the fork, so a peer's error can end it before)."""
        return output_tail(self._output_path(rank))

    def _result_path(self, rank: int) -> Path:
        return self.folder / f"result{rank}.json"

    def _planned_path(self, rank: int) -> Path:
        return self.folder / f"planned-exit{rank}"

    def _output_path(self, rank: int) -> Path:
        return self.folder / f"output{rank}.txt"


def output_tail(path: Path) -> str:
    """The last :data:`OUTPUT_TAIL_CHARS` of the file ``path`` as text; empty when there is no such file."""
    if not path.exists():
        return ""
    with open(path, "rb") as output:
        output.seek(max(0, output.seek(0, os.SEEK_END) - OUTPUT_TAIL_CHARS))
        return output.read().decode(errors="replace")


def rank_environment(planned_exit: Path, deadline_s: float, *, output: Path | None = None) -> dict[str, str]:
    """The variables a rank process gets from the kit: its import path, where it notes a planned exit, how long a
    collective may wait and, for a launcher that does not keep it (torchrun), where its output goes; a path may hold
    ``{rank}``, filled with the rank's ``RANK``."""
    return {"PYTHONPATH": os.pathsep.join(sys.path), "PYTHONUNBUFFERED": "1", RANK_PROCESS_ENV: "1",
            _PLANNED_EXIT_ENV: str(planned_exit),
            PROCESS_GROUP_TIMEOUT_ENV: str(min(_DEFAULT_PROCESS_GROUP_TIMEOUT, deadline_s)),
            **({} if output is None else {_RANK_OUTPUT_ENV: str(output)})}


def _start_process(module: str, spec: str, env: dict[str, str], output: Path, *, show_progress: bool
                   ) -> subprocess.Popen[bytes] | ForkedProcess:
    """``python -m module spec`` in its own session, output to the file ``output``: forked by this process's fork
    server where there is one (milliseconds instead of seconds of imports), else a new interpreter."""
    server = fork_server()
    if server is not None:
        if show_progress:
            env[PROGRESS_FD_ENV] = "the fork server's stderr"  # the child puts its own copy of that fd here
        return server.spawn(module, [spec], env=env, output=str(output))
    passed = (os.dup(sys.stderr.fileno()),) if show_progress else ()  # a copy: the child's fd 2 is its output file
    if passed:
        env[PROGRESS_FD_ENV] = str(passed[0])
    try:
        with open(output, "wb") as file:
            return subprocess.Popen([sys.executable, "-m", module, spec], env=env, stdout=file,
                                    stderr=subprocess.STDOUT, start_new_session=True, pass_fds=passed)
    finally:
        for fd in passed:
            os.close(fd)


def with_group(process: subprocess.Popen[bytes] | ForkedProcess, signum: int) -> None:
    """Send ``signum`` to ``process`` and its process group (its loader workers, or what it left running after it
    ended), if any of them still runs.

    A process the fork server has just forked makes its own group a moment later: signalled before, it has no group
    yet, so it is signalled itself too while it runs (the launcher once waited forever on a peer it had missed).
    """
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:  # still running, so the pid is still its own
        try:
            os.kill(process.pid, signum)
        except ProcessLookupError:
            pass


def finish_jobs(jobs: Sequence[RankJob], poll_interval: float = 0.05) -> None:
    """Poll ``jobs`` until every one has ended; if the caller is interrupted, kill them all first."""
    try:
        while True:
            finished = [job.poll() for job in jobs]  # every job polled each round, none short-circuited
            if all(finished):
                return
            time.sleep(poll_interval)
    except BaseException:
        for job in jobs:
            job.kill("was killed because the conformance run was interrupted")
        raise


def recipe_rank_main(run_rank: Callable[[type, Plan, int], RankLog], plan_type: Callable[..., Plan]) -> None:
    """The body of a rank process: import the recipe, ``run_rank(recipe, plan, rank)``, write the log as JSON."""
    output_pattern = os.environ.get(_RANK_OUTPUT_ENV)
    if output_pattern is not None:  # torchrun's own redirects name files by local rank, on every node alike
        output_fd = os.open(_for_this_rank(output_pattern), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for stream in (1, 2):
            os.dup2(output_fd, stream)
    spec = json.loads(Path(sys.argv[1]).read_text())
    rank = spec["rank"] if "rank" in spec else int(os.environ["RANK"])
    module_name, qualname = spec["recipe"].rsplit(":", 1)
    recipe = _resolve_name(_import_recipe_module(module_name), qualname)
    if recipe is None:
        raise ConformanceSetupError(f"{qualname} is not defined when {module_name} is imported in a fresh process; "
                                    "define the conformance class at module level, not in a function or at run time")
    log = run_rank(recipe, plan_type(**spec["plan"]), rank)
    output = Path(spec["output"].replace("{rank}", str(rank)))
    written = output.with_name(f"{output.name}.partial")  # renamed when whole: a rank dying mid-write leaves none
    written.write_text(json.dumps(dataclasses.asdict(log)))
    os.replace(written, output)


def _for_this_rank(path_pattern: str) -> str:
    """``path_pattern`` with ``{rank}`` filled with this process's ``RANK`` (a launcher's shared pattern)."""
    return path_pattern.replace("{rank}", os.environ.get("RANK", "0"))


def importable_name(recipe: type, owner_of: str = "make_datamodule") -> str:
    """``module:qualname`` of ``recipe``, or of the class in its MRO that defines ``owner_of``, if importable.

    Pass ``owner_of=""`` when the fresh process needs ``recipe`` itself.

    A class of a script run as ``__main__`` (``python test_file.py``) is named by the script's path, which rank
    processes import by path under another module name, as multiprocessing's spawn start method does.
    """
    owner = next((cls for cls in recipe.__mro__ if owner_of and owner_of in vars(cls)), recipe)
    for cls in (recipe, owner):
        module = sys.modules.get(cls.__module__)
        if module is None or _resolve_name(module, cls.__qualname__) is not cls:
            continue
        if cls.__module__ != "__main__":
            return f"{cls.__module__}:{cls.__qualname__}"
        script = getattr(module, "__file__", None)
        if script is not None and script.endswith(".py"):
            return f"{Path(script).resolve()}:{cls.__qualname__}"
    needed = (f"the class defining {owner_of} ({owner.__module__}.{owner.__qualname__})" if owner_of
              else f"{recipe.__module__}.{recipe.__qualname__}")
    raise ConformanceSetupError(
        f"{recipe.__qualname__}: its runs start fresh processes that import {needed}, but it cannot be imported by "
        "that name; define it at module level in an importable module or script (not in a function or a test body)"
    )


def _import_recipe_module(name: str) -> Any:
    """The module ``name``, or the script at path ``name`` (a ``.py`` file) imported as ``__mp_main__``, its
    ``if __name__ == "__main__":`` block not run."""
    if not name.endswith(".py"):
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(_SCRIPT_MODULE, name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_SCRIPT_MODULE] = module
    spec.loader.exec_module(module)
    return module


def _resolve_name(module: Any, qualname: str) -> Any:
    """The object at dotted ``qualname`` inside ``module``, or None."""
    value = module
    for part in qualname.split("."):
        value = getattr(value, part, None)
    return value


def _describe_exit(returncode: int) -> str:
    if returncode == EXIT_UNKNOWN:
        return "an unknown status (the fork server ended before reporting it)"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _free_port() -> int:
    """A free TCP port below the ephemeral range (where the OS picks ports for outgoing connections, gloo's
    included), drawn at random so that concurrent conformance classes do not pick the same one."""
    for _ in range(100):
        port = _PORTS.randint(20000, 32000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port found between 20000 and 32000 for the ranks' rendezvous")
