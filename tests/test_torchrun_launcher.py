"""Runs launched by torchrun reach the verdicts the kit's launcher reaches: the launcher setting (class attribute,
environment override, template, certify's --launcher), the reference DDP class (its interrupted run killed by
SIGKILL after the checkpoint, counted as planned) under both launchers and by two torchrun agents as two nodes, a
mutant of it, and a hung rank ending the whole torchrun launch at the deadline with every rank's output and no
process left behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
from pathlib import Path
from unittest import mock

from conformance import ConformanceSetupError
from conformance.report import run_classes
from conformance.runs.launchers import LAUNCHER_ENV, launcher_for
from reference_models import certify
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from tests import distributed_recipes, launcher_subjects
from tests.slurm_cluster import SlurmCluster


def _processes_marked(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds ``marker`` (set for one launch: its agent and its
    workers inherit it, and nothing else running on the machine has it)."""
    marked = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() not in (entry / "environ").read_bytes():
                    continue
                marked.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
    return marked


class TestLauncherSetting(unittest.TestCase):
    def test_the_environment_overrides_the_class_and_a_template_needs_the_kits_arguments(self) -> None:
        self.assertEqual(launcher_for("kit").kind, "kit")
        with mock.patch.dict(os.environ, {LAUNCHER_ENV: "torchrun"}):
            self.assertEqual(launcher_for("kit").kind, "torchrun")
        template = launcher_for("srun --ntasks=1 torchrun --nproc-per-node={nproc} --rdzv-endpoint={host}:{port} "
                                "--rdzv-id={run_id} {torchrun_args}")
        self.assertEqual(template.command(python="python", torchrun_args=["-m", "entry", "spec.json"], nproc=2,
                                          port=29400, run_id="abc", host="127.0.0.1"),
                         ["srun", "--ntasks=1", "torchrun", "--nproc-per-node=2", "--rdzv-endpoint=127.0.0.1:29400",
                          "--rdzv-id=abc", "-m", "entry", "spec.json"])
        with self.assertRaises(ConformanceSetupError) as caught:
            launcher_for("srun torchrun")
        self.assertIn("a template must end with {torchrun_args}", str(caught.exception))
        with self.assertRaises(ConformanceSetupError) as caught:
            launcher_for("torchrun --nnodes={nodes} {torchrun_args}")
        self.assertIn("has a placeholder the kit does not fill ('nodes')", str(caught.exception))

    def test_a_class_with_a_bad_launcher_is_a_set_up_error_naming_it(self) -> None:
        cls = type("BadLauncher", (launcher_subjects.TorchrunGPTDDP,), {"launcher": "mpirun", "__module__": __name__})
        with self.assertRaises(ConformanceSetupError) as caught:
            cls.validate_settings()
        self.assertIn("launcher = 'mpirun' is neither 'kit', 'torchrun' nor a command template", str(caught.exception))


class TestSameVerdictsUnderTorchrun(unittest.TestCase):
    def test_the_reference_ddp_class_passes_under_either_launcher(self) -> None:
        verdicts = launcher_subjects.verdicts_by_launcher(certify.TestTinyGPTDDPStopAndGo)
        (kit, kit_text), (torchrun, torchrun_text) = verdicts["kit"], verdicts["torchrun"]
        self.assertEqual(torchrun, kit, torchrun_text)
        self.assertNotIn("failed", torchrun.values(), torchrun_text)
        self.assertIn("ranks started by torchrun (node 0 of 1)\n", torchrun_text)
        self.assertIn("ranks started by the kit's launcher", kit_text)

    def test_the_elastic_reference_classes_pass_under_either_launcher(self) -> None:
        """2 -> 1 and 1 -> 2 ranks: the elastic run is a torchrun launch of its own world size."""
        for cls in (certify.TestGPTElasticResumeTwoToOne, certify.TestGPTElasticResumeOneToTwo):
            with self.subTest(cls=cls.__name__):
                verdicts = launcher_subjects.verdicts_by_launcher(cls)
                (kit, _), (torchrun, torchrun_text) = verdicts["kit"], verdicts["torchrun"]
                self.assertEqual(torchrun, kit, torchrun_text)
                self.assertEqual(torchrun["test_elastic_resume"], "passed", torchrun_text)

    def test_two_torchrun_agents_form_one_job_that_passes_like_one(self) -> None:
        """The multi-node path on one machine: two agents (node ranks 0 and 1) joined by the c10d rendezvous."""
        report = run_classes([launcher_subjects.TwoAgentGPTDDP])
        self.assertTrue(report.ok, report.format_text())
        self.assertIn("ranks started by torchrun (node 0 of 2) and torchrun (node 1 of 2)", report.format_text())

    def test_a_ddp_mutant_is_killed_under_torchrun(self) -> None:
        mutant = next(mutant for mutant in STOP_AND_GO_MUTANTS if mutant.name == "rng_saved_for_rank0_only")
        with mock.patch.dict(os.environ, {LAUNCHER_ENV: "torchrun"}):
            report = run_classes([mutant.conformance_class])
        self.assertEqual(mutant.problems(report), [], report.format_text())

    def test_a_hung_rank_ends_the_whole_launch_at_the_deadline_with_every_ranks_output(self) -> None:
        started, marker = time.monotonic(), f"CONFORMANCE_TEST_LAUNCH={uuid.uuid4().hex}"
        with mock.patch.dict(os.environ, {LAUNCHER_ENV: "torchrun", "CONFORMANCE_TEST_LAUNCH": marker.split("=")[1]}):
            report = run_classes([distributed_recipes.HangingRank], checks=["test_runs_trained"])
        deadline = distributed_recipes.HangingRank.process_deadline_s
        self.assertLess(time.monotonic() - started, 2 * deadline + 40)
        message = report.outcome("HangingRank", "test_runs_trained").message
        self.assertRegex(message, r"the reference run failed on rank [01]")
        # the collective's timeout equals the deadline: the launch ends by whichever comes first, never later
        self.assertRegex(message, r"deadline of 20 s and was killed with the whole torchrun launch|timed out|Timeout|"
                                  r"stopped by the kit because rank [01] failed first")
        for rank in (0, 1):
            self.assertRegex(message, rf"rank {rank}\b", f"rank {rank}'s failure and output are shown")
        self.assertEqual(_processes_marked(marker), [], "no agent or worker of the launch is left running")



class TestUnderSlurm(unittest.TestCase):
    """The reference DDP class through an srun template, on a one-node SLURM cluster started for the test."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.cluster = SlurmCluster()
        cls.not_here = cls.cluster.start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.cluster.stop()

    def test_the_reference_ddp_class_passes_through_srun(self) -> None:
        if self.not_here:
            self.skipTest(f"no SLURM cluster: {self.not_here}")
        with mock.patch.dict(os.environ, {**self.cluster.environment, LAUNCHER_ENV: launcher_subjects.SRUN_TWO_TASKS}):
            report = run_classes([certify.TestTinyGPTDDPStopAndGo])
        self.assertTrue(report.ok, report.format_text())
        self.assertIn("ranks started by torchrun (node 0 of 2) and torchrun (node 1 of 2)", report.format_text())


class TestCertifyWithALauncher(unittest.TestCase):
    def certify(self, *args: str) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory() as folder:
            return subprocess.run([sys.executable, "-m", "conformance", "certify", *args, "--output", folder],
                                  capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], check=False)

    def test_certify_launches_every_run_with_torchrun(self) -> None:
        process = self.certify("reference_models.certify", "-k", "TestTinyGPTDDPStopAndGo", "--launcher", "torchrun")
        self.assertEqual(process.returncode, 0, process.stdout + process.stderr)
        self.assertIn("ranks started by torchrun (node 0 of 1)", process.stdout)

    def test_a_bad_launcher_is_refused_before_anything_runs(self) -> None:
        process = self.certify("reference_models.certify", "--launcher", "mpirun -np 2")
        self.assertEqual(process.returncode, 2)
        self.assertIn("--launcher: CONFORMANCE_LAUNCHER = 'mpirun -np 2' is neither", process.stderr)


if __name__ == "__main__":
    unittest.main()
