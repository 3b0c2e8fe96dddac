"""The reference DDP class launched by torchrun, by two torchrun agents and by srun (classes at module level: the
rank processes import them by name), and the verdicts of a class under each launcher. Not collected."""

from __future__ import annotations

import os
from unittest import mock

from conformance.report import run_classes
from conformance.runs.launchers import LAUNCHER_ENV
from reference_models.certify import TestTinyGPTDDPStopAndGo

LAUNCHERS = ("kit", "torchrun")


def verdicts_by_launcher(cls: type) -> dict[str, tuple[dict[str, str], str]]:
    """``cls`` run under each of :data:`LAUNCHERS` (the environment override): its statuses and report text."""
    verdicts = {}
    for launcher in LAUNCHERS:
        with mock.patch.dict(os.environ, {LAUNCHER_ENV: launcher}):
            report = run_classes([cls])
        verdicts[launcher] = (report.statuses(), report.format_text())
    return verdicts


class TorchrunGPTDDP(TestTinyGPTDDPStopAndGo):
    launcher = "torchrun"

#: Two torchrun agents on this machine (node ranks 0 and 1, one worker each) forming one 2-rank job through the
#: c10d rendezvous: the multi-node path, each agent what ``srun`` would start on its node.
_AGENT = ("{python} -m torch.distributed.run --nnodes=2 --node-rank=NODE --nproc-per-node=1 --rdzv-backend=c10d "
          "--rdzv-endpoint={host}:{port} --rdzv-id={run_id} {torchrun_args}")
TWO_AGENTS = "sh -c '" + _AGENT.replace("NODE", "0") + " & " + _AGENT.replace("NODE", "1") + " & wait'"

class TwoAgentGPTDDP(TestTinyGPTDDPStopAndGo):
    launcher = TWO_AGENTS

#: What a SLURM allocation runs: ``srun`` starts one torchrun agent per task (two tasks stand for two nodes here),
#: the agents meet in the c10d rendezvous on the host that runs certify. The README's cluster section uses it.
SRUN_TWO_TASKS = ("srun --nodes=1 --ntasks=2 --overcommit sh -c '{python} -m torch.distributed.run --nnodes=2 "
                  "--nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint={host}:{port} --rdzv-id={run_id} "
                  "{torchrun_args}'")
