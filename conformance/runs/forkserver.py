"""A fork server: one process that imports torch, Lightning and the kit once, then forks every rank process.

Starting a rank process costs about 5 s of imports on a small machine; forking this server costs milliseconds.
The server never runs a recipe, builds a model or touches CUDA, so each child starts as fresh as a new interpreter
as far as the code under test can tell: the recipe's modules are imported in the child, after the fork, and
nothing a previous run did is in memory. The child takes the request's environment, working folder and import
path, gets its own session (so it can be killed with its loader workers), sends its output to a file, and runs
``python -m MODULE ARGS`` as a new interpreter would.

Protocol (one JSON object per line): the client writes ``{"id", "module", "args", "env", "cwd", "output"}``; the
server answers ``{"id", "pid"}`` once forked and ``{"id", "exit"}`` (the exit code, negative for a signal) once the
child has ended. Closing the server's stdin ends it; its children are independent sessions and run on.
"""

from __future__ import annotations

import atexit
import json
import os
import runpy
import select
import subprocess
import sys
import time
import traceback
from typing import Any

__all__ = ["PRELOADED", "PROGRESS_FD_ENV", "ForkServer", "ForkedProcess", "fork_server", "preloaded", "serve"]

#: What the server imports before forking: the cost every rank process would otherwise pay.
PRELOADED = ("torch", "lightning.pytorch", "conformance")

#: The exit code of a forked process whose server died before reporting it (no real process exits with it).
EXIT_UNKNOWN = 255 + 1000

#: Where a forked rank finds the file descriptor on which it may show progress (the server's stderr).
PROGRESS_FD_ENV = "CONFORMANCE_PROGRESS_FD"

#: Lightning reads the process's rank from the environment when it is imported; a child sets it again.
_RANK_AT_IMPORT = ("lightning.fabric.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero",
                   "lightning_utilities.core.rank_zero")


def preloaded() -> list[str]:
    """:data:`PRELOADED`, then the modules named in ``CONFORMANCE_PRELOAD`` (comma-separated): heavy libraries a
    recipe imports (NeMo, Megatron-core), imported once by the server instead of by every rank."""
    extra = [name.strip() for name in os.environ.get("CONFORMANCE_PRELOAD", "").split(",") if name.strip()]
    return [*PRELOADED, *extra]


def serve() -> None:
    """Answer fork requests on stdin until it closes."""
    for module in preloaded():
        __import__(module)
    stdin = sys.stdin.fileno()
    pending = b""
    children: dict[int, Any] = {}
    while True:
        readable, _, _ = select.select([stdin], [], [], 0.02)
        if readable:
            chunk = os.read(stdin, 1 << 16)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _run_child(request)
                children[pid] = request["id"]
                _answer({"id": request["id"], "pid": pid})
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _answer({"id": children.pop(pid), "exit": os.waitstatus_to_exitcode(status)})


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _run_child(request: dict[str, Any]) -> None:
    """Become ``python -m module args`` in the request's environment; never returns."""
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        output = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        progress = os.dup(2)  # the server's stderr (the client's), for a rank that shows progress
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        # line-buffered, as the server's pipe-bound streams are not: a rank killed by a signal keeps its output
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.environ.clear()
        os.environ.update(request["env"])
        if PROGRESS_FD_ENV in os.environ:
            os.environ[PROGRESS_FD_ENV] = str(progress)
        else:
            os.close(progress)
        sys.path[:0] = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                        if entry and entry not in sys.path]
        for name in _RANK_AT_IMPORT:
            module = sys.modules.get(name)
            if module is not None and hasattr(module, "rank_zero_only"):
                rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
                module.rank_zero_only.rank = int(rank)
        sys.argv = [request["module"], *request["args"]]
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit_:
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)  # as an interpreter does with sys.exit("message")
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - what an uncaught exception does to a new interpreter
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class ForkedProcess:
    """A rank process forked by the server, as much like ``subprocess.Popen`` as the launcher needs."""

    def __init__(self, server: ForkServer, request_id: int, pid: int) -> None:
        self._server = server
        self._id = request_id
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit code once the process has ended; :data:`EXIT_UNKNOWN` if the server died before telling."""
        if self.returncode is None:
            self.returncode = self._server.exit_code(self._id)
        if self.returncode is None and not self._server.alive and not _exists(self.pid):
            self.returncode = EXIT_UNKNOWN
        return self.returncode

    def wait(self) -> int:
        while self.poll() is None:
            self._server.wait_for_news()
        return self.returncode


class ForkServer:
    """The client end: starts the server (:func:`serve` in a new interpreter) and asks it to fork."""

    def __init__(self) -> None:
        serve_here = f"from {__name__} import serve; serve()"  # not -m: the package imports this module first
        # its own session: a Ctrl-C meant for the test run must not kill the server under ranks still to be reaped
        self._server = subprocess.Popen([sys.executable, "-c", serve_here], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
                                        start_new_session=True)
        os.set_blocking(self._server.stdout.fileno(), False)
        self._pending = b""
        self._pids: dict[int, int] = {}
        self._exits: dict[int, int] = {}
        self._next_id = 0

    @property
    def alive(self) -> bool:
        return self._server.poll() is None

    def close(self) -> None:
        """End the server (its children, in their own sessions, are not touched)."""
        self._server.stdin.close()
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._server.kill()
            self._server.wait()
        self._server.stdout.close()

    def spawn(self, module: str, args: list[str], *, env: dict[str, str], output: str) -> ForkedProcess:
        """Fork ``python -m module args`` with ``env`` and its output to the file ``output``."""
        self._next_id += 1
        request = {"id": self._next_id, "module": module, "args": args, "env": env, "cwd": os.getcwd(),
                   "output": output}
        self._server.stdin.write((json.dumps(request) + "\n").encode())
        self._server.stdin.flush()
        while self._next_id not in self._pids:
            if not self.alive:
                raise RuntimeError(f"the conformance fork server ended with exit code {self._server.returncode}")
            self.wait_for_news()
        return ForkedProcess(self, self._next_id, self._pids[self._next_id])

    def exit_code(self, request_id: int) -> int | None:
        """The exit code of the child of ``request_id`` if it has ended (news read without waiting)."""
        self._read()
        return self._exits.get(request_id)

    def wait_for_news(self, timeout: float = 0.02) -> None:
        if self.alive:
            select.select([self._server.stdout], [], [], timeout)
            self._read()
        else:
            time.sleep(timeout)  # its pipe is at end of file: select would return at once, every time

    def _read(self) -> None:
        try:
            chunk = os.read(self._server.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:  # the server has ended
            self._server.poll()
            return
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            message = json.loads(line)
            if "pid" in message:
                self._pids[message["id"]] = message["pid"]
            else:
                self._exits[message["id"]] = message["exit"]


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_SERVER: ForkServer | None = None


def fork_server() -> ForkServer | None:
    """This process's fork server, started on first use; None where rank processes must be started plainly
    (no ``os.fork``, or ``CONFORMANCE_FORK_SERVER=0``)."""
    global _SERVER
    if not hasattr(os, "fork") or os.environ.get("CONFORMANCE_FORK_SERVER", "1") == "0":
        return None
    if _SERVER is None or not _SERVER.alive:
        _SERVER = ForkServer()
        atexit.register(_SERVER.close)
    return _SERVER
