"""How a run's ranks start: the kit's own launcher (the default), torchrun on this machine, or a command template
of the adopter's (``srun ... torchrun ...`` on a cluster), chosen per class or for a whole CI job.

The setting is the class attribute ``launcher`` or, overriding it, the environment variable
:data:`LAUNCHER_ENV`: ``"kit"``, ``"torchrun"``, or a command template that starts torchrun its own way and ends
with ``{torchrun_args}``, where the kit puts the arguments it needs (no restarts, the rank entry point and the run's
spec). The template gives the rendezvous with the placeholders ``{nproc}`` (ranks of the run), ``{host}`` and
``{port}`` (this machine and a free port on it) and ``{run_id}`` (fresh per run), and may use ``{python}`` (this
interpreter). Every run is a launch of its own with a fresh rendezvous id (a completed rendezvous cannot be reused
reliably), so a resumed run is always a fresh process.
"""

from __future__ import annotations

import os
import shlex
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conformance.errors import ConformanceSetupError

__all__ = ["LAUNCHER_ENV", "WORK_DIR_ENV", "Launcher", "launcher_for", "work_folder"]

#: Overrides every class's ``launcher`` setting, e.g. for one CI job.
LAUNCHER_ENV = "CONFORMANCE_LAUNCHER"
#: A folder every node of a cluster launch can reach, for the runs' records, checkpoints and rank files (default:
#: the system's temporary folder, enough on one machine).
WORK_DIR_ENV = "CONFORMANCE_WORK_DIR"
_PLACEHOLDERS = ("{torchrun_args}", "{nproc}", "{host}", "{port}", "{run_id}", "{python}")


@dataclass(frozen=True)
class Launcher:
    """One launcher setting: ``kind`` "kit" or "torchrun"; a torchrun launch runs ``template`` (one torchrun agent
    on this machine unless the adopter gives one)."""

    kind: str
    template: str = ("{python} -m torch.distributed.run --nnodes=1 --nproc-per-node={nproc} --rdzv-backend=c10d "
                     "--rdzv-endpoint={host}:{port} --rdzv-id={run_id} {torchrun_args}")

    @property
    def rendezvous_host(self) -> str:
        """Where the rendezvous is hosted: this machine as its peers reach it (its host name for a template that
        may start agents on other nodes, the loopback address for one agent here)."""
        return "127.0.0.1" if self.template == Launcher.template else socket.gethostname()

    def command(self, *, python: str, torchrun_args: list[str], nproc: int, port: int, run_id: str,
                host: str) -> list[str]:
        """The launch command of one run, its placeholders filled."""
        filled = self.template.format(python=shlex.quote(python), torchrun_args=shlex.join(torchrun_args),
                                      nproc=nproc, port=port, run_id=run_id, host=host)
        return shlex.split(filled)


def launcher_for(setting: str | None) -> Launcher:
    """The launcher a class's ``launcher`` setting names, :data:`LAUNCHER_ENV` taking precedence; raises
    :class:`ConformanceSetupError` for a setting that is none of "kit", "torchrun" or a template."""
    chosen = os.environ.get(LAUNCHER_ENV) or setting or "kit"
    if chosen in ("kit", "torchrun"):
        return Launcher(chosen)
    if "{torchrun_args}" not in chosen:
        source = LAUNCHER_ENV if os.environ.get(LAUNCHER_ENV) else "launcher"
        raise ConformanceSetupError(
            f"{source} = {chosen!r} is neither 'kit', 'torchrun' nor a command template: a template must end with "
            "{torchrun_args}, where the kit puts its arguments to torchrun, e.g. 'srun --nodes=2 --ntasks-per-node=1 "
            "torchrun --nnodes=2 --nproc-per-node={nproc} --rdzv-backend=c10d --rdzv-endpoint={host}:{port} "
            "--rdzv-id={run_id} {torchrun_args}'")
    try:
        chosen.format(python="", torchrun_args="", nproc=1, port=1, run_id="", host="")
    except (KeyError, IndexError, ValueError) as exc:
        raise ConformanceSetupError(f"the launcher template {chosen!r} has a placeholder the kit does not fill "
                                    f"({exc}); it may use {', '.join(_PLACEHOLDERS)}") from None
    return Launcher("torchrun", chosen)


def work_folder(prefix: str) -> Path:
    """A new folder for one class's or one run's files, under :data:`WORK_DIR_ENV` where it is set."""
    parent = os.environ.get(WORK_DIR_ENV) or None
    if parent is not None:
        Path(parent).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))

