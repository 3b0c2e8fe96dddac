"""Set-up findings of outside recipes (issue 21, section 4), each a regression test: a conformance class in a script
run as ``__main__`` runs its fresh processes, every kind of set-up problem is listed in one error, and batch sizes
that do not split over the DDP ranks are one; a hook copied bound from another class is told to subclass."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from conformance import ConformanceSetupError, StopAndGoConformance
from reference_models.recipes import DDPGPTRecipe, GPTRecipe

_ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent('''
    import unittest

    from conformance import StopAndGoConformance
    from reference_models.attached_trainer import AttachedTrainerRecipe


    class TestFromAScript(AttachedTrainerRecipe, StopAndGoConformance, unittest.TestCase):
        num_steps, stop_step = 4, 2      # resume_in_fresh_process is on: every run is a fresh process


    if __name__ == "__main__":
        unittest.main()
''')


class TestScriptRunAsMain(unittest.TestCase):
    def test_its_class_runs_in_fresh_processes(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            script = Path(folder) / "test_my_trainer.py"
            script.write_text(_SCRIPT)
            done = subprocess.run([sys.executable, str(script)], check=False, cwd=folder, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(_ROOT)}, timeout=300)
        self.assertEqual(done.returncode, 0, done.stderr[-3000:])
        self.assertIn("OK", done.stderr.splitlines()[-1])
        self.assertNotIn("cannot be imported", done.stderr)


class TestEveryKindOfSetupProblemAtOnce(unittest.TestCase):
    def test_an_unimportable_class_with_a_bare_callback(self) -> None:
        def make_callbacks(cls: type) -> Callback:
            return Callback()

        local = type("LocalClass", (GPTRecipe, StopAndGoConformance, unittest.TestCase),
                     {"make_callbacks": classmethod(make_callbacks)})
        with self.assertRaises(ConformanceSetupError) as caught:
            local.validate()
        message = str(caught.exception)
        self.assertIn("cannot be imported by that name", message)
        self.assertIn("make_callbacks() returned a Callback, not a list", message)


class TestBatchSizesOverRanks(unittest.TestCase):
    def test_a_global_batch_two_ddp_ranks_cannot_split_is_a_setup_error(self) -> None:
        cls = type("Indivisible", (DDPGPTRecipe, StopAndGoConformance, unittest.TestCase), {
            "__module__": __name__, "datamodule_kwargs": {"micro_batch_size": 4, "global_batch_size": 12},
            "trainer_kwargs": classmethod(lambda cls: {"devices": 2, "strategy": "ddp",
                                                       "use_distributed_sampler": False})})
        globals()["Indivisible"] = cls  # importable by name, as its fresh processes need
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate()
        self.assertIn("global_batch_size 12 is not a multiple of micro_batch_size 4 x 2 data-parallel ranks = 8",
                      str(caught.exception))

    def test_one_rank_names_the_micro_batch_alone(self) -> None:
        cls = type("Uneven", (GPTRecipe, StopAndGoConformance, unittest.TestCase), {
            "datamodule_kwargs": {"micro_batch_size": 4, "global_batch_size": 6}, "resume_in_fresh_process": False})
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate()
        self.assertIn("global_batch_size 6 is not a multiple of micro_batch_size 4: choose", str(caught.exception))


class TestSmallerMessages(unittest.TestCase):
    def test_a_hook_copied_bound_from_another_class_is_told_to_subclass(self) -> None:
        cls = type("Copied", (StopAndGoConformance, unittest.TestCase),
                   {"make_model": GPTRecipe.make_model, "make_datamodule": GPTRecipe.make_datamodule,
                    "resume_in_fresh_process": False})
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
        self.assertIn("hook 'make_model' is GPTRecipe's classmethod, copied already bound to that class: subclass "
                      "GPTRecipe instead of copying its hook", str(caught.exception))

if __name__ == "__main__":
    unittest.main()
