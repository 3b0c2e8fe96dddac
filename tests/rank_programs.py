"""Tiny rank programs for the launcher's tests: each rank does what the payload's ``behaviour[rank]`` says.

    python -m tests.rank_programs SPEC.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    rank = spec["rank"]
    behaviour = spec["behaviour"][rank]
    if behaviour == "ok":
        Path(spec["output"]).write_text(json.dumps({"rank": rank}))
    elif behaviour == "error":
        Path(spec["output"]).write_text(json.dumps({"rank": rank, "error": f"ValueError: rank {rank} went wrong"}))
    elif behaviour == "exit":
        waited_for = Path(spec.get("child_pid_file", sys.argv[1]))  # a peer's child, when there is one to kill
        for _ in range(3000):
            if waited_for.exists():
                break
            time.sleep(0.01)
        print(f"rank {rank} gives up", flush=True)
        sys.exit(3)
    elif behaviour == "hang":
        time.sleep(3600)
    elif behaviour == "hang_with_child":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        Path(spec["child_pid_file"]).write_text(str(child.pid))
        time.sleep(3600)
    elif behaviour == "ok_leaving_a_child":  # as a multiprocessing Manager a library started and never shut down
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        Path(spec["child_pid_file"]).write_text(str(child.pid))
        Path(spec["output"]).write_text(json.dumps({"rank": rank}))
        os._exit(0)
    elif behaviour == "chatty":
        for line in range(40_000):
            print(f"line {line} of a rank that writes far more than a pipe buffer holds")
        Path(spec["output"]).write_text(json.dumps({"rank": rank}))
    elif behaviour == "rendezvous":
        import datetime

        import torch.distributed as dist

        try:
            dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
            dist.barrier()
            dist.destroy_process_group()
            Path(spec["output"]).write_text(json.dumps({"rank": rank}))
        except Exception as exc:  # noqa: BLE001 - reported as the kit's ranks report failures
            Path(spec["output"]).write_text(json.dumps({"rank": rank, "error": f"{type(exc).__name__}: {exc}"}))
    elif behaviour == "environment":
        from lightning.pytorch.utilities import rank_zero_only

        Path(spec["output"]).write_text(json.dumps({"SOMETHING_NEW": os.environ.get("SOMETHING_NEW"),
                                                    "rank_zero_only": rank_zero_only.rank, "session": os.getsid(0)}))
    elif behaviour == "planned_kill":
        from conformance.runs.processes import exit_by_signal_as_planned  # imports the kit: only where needed

        exit_by_signal_as_planned()
    else:
        raise ValueError(f"unknown behaviour {behaviour!r}")


if __name__ == "__main__":
    main()
