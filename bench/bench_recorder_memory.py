"""Benchmark: RAM of a recorded training run does not grow with the number of steps (records spill to disk).

Each configuration trains in a fresh subprocess a GPT wide enough that holding its per-step records in memory
would show (about 0.8M parameters: ~10 MB of AdamW state recorded per step). Reported per run: peak RSS, RSS
after step 5 and at the end, for 10 and 100 steps, with and without the recorder.

    python bench/bench_recorder_memory.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """Resident set size of this process in MiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


def child(steps: int, record: bool) -> None:
    """Train ``steps`` steps, sampling RSS after every optimizer step; print a JSON summary."""
    sys.path.insert(0, str(ROOT))
    import lightning.pytorch as pl

    from conformance import StopAndGoConformance
    from conformance.runs.backend import FitPlan
    from conformance.runs.lightning.fit import fit_run
    from reference_models.data import SyntheticDataModule
    from reference_models.gpt import TinyGPT
    from reference_models.recipes import GPTRecipe
    from reference_models.transformer import TransformerConfig

    samples: list[float] = []

    class SampleRSS(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            samples.append(rss_mib())

    class WideRecipe(GPTRecipe, StopAndGoConformance):
        @classmethod
        def make_model(cls) -> TinyGPT:
            return TinyGPT(TransformerConfig(vocab_size=256, seq_len=64, width=128, heads=4, layers=4))

        @classmethod
        def make_datamodule(cls) -> SyntheticDataModule:
            return SyntheticDataModule(num_train=256, seq_len=64, vocab_size=256)

        @classmethod
        def make_callbacks(cls) -> list[pl.Callback]:
            return [*super().make_callbacks(), SampleRSS()]

    with tempfile.TemporaryDirectory() as work:
        outcome = fit_run(WideRecipe, FitPlan("run", work, max_steps=steps, seed=0, record=record))
        if outcome.error:
            raise RuntimeError(outcome.error)
        on_disk = sum(f.stat().st_size for f in Path(work).rglob("*") if f.is_file()) / 2**20
    print(json.dumps({"peak": max(samples), "at_step_5": samples[9], "end": samples[-1], "disk": on_disk}))


def main() -> None:
    print(f"{'steps':>5} {'recorder':>8} {'peak RSS MiB':>13} {'RSS@step5':>10} {'RSS@end':>8} "
          f"{'growth':>7} {'records on disk MiB':>20}")
    for steps in (10, 100):
        for record in (False, True):
            output = subprocess.run([sys.executable, __file__, "--child", str(steps), str(int(record))],
                                    capture_output=True, text=True, check=True, cwd=ROOT).stdout
            result = json.loads(output.strip().splitlines()[-1])
            print(f"{steps:>5} {'on' if record else 'off':>8} {result['peak']:>13.1f} {result['at_step_5']:>10.1f} "
                  f"{result['end']:>8.1f} {result['end'] - result['at_step_5']:>+7.1f} {result['disk']:>20.1f}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), bool(int(sys.argv[3])))
    else:
        main()
