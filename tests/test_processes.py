"""The rank-process launcher cannot hang or leak: failures and deadlines stop every rank, output goes to files."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path
from unittest import mock

from conformance.runs.forkserver import EXIT_UNKNOWN, PRELOADED, ForkServer, fork_server, preloaded
from conformance.runs.processes import RankJob, RankLog, _free_port, finish_jobs, with_group


def run(*behaviour: str, deadline_s: float = 60, **payload: str) -> tuple[RankJob, float]:
    """Run ``tests.rank_programs`` with one behaviour per rank; the finished job and its wall time."""
    started = time.monotonic()
    job = RankJob("tests.rank_programs", {"behaviour": list(behaviour), **payload}, len(behaviour),
                  deadline_s=deadline_s, distributed=False)
    finish_jobs([job])
    return job, time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestRankJob(unittest.TestCase):
    def test_ranks_that_succeed_report_their_logs(self) -> None:
        job, _ = run("ok", "ok")
        self.assertEqual([exit_.as_log(RankLog) for exit_ in job.exits()], [RankLog(rank=0), RankLog(rank=1)])
        self.assertFalse(job.folder.exists(), "the temporary folder is removed once the ranks are gone")

    def test_a_hung_rank_is_killed_at_the_deadline(self) -> None:
        job, seconds = run("ok", "hang", deadline_s=3)
        self.assertLess(seconds, 3 + 5)
        hung = job.exits()[1].as_log(RankLog)
        self.assertIn("rank 1 was still running at the deadline of 3 s and was killed", hung.error)
        self.assertEqual(hung.killed_by_signal, 9)
        self.assertIsNone(job.exits()[0].as_log(RankLog).error)

    def test_a_crashed_rank_stops_its_peers_at_once(self) -> None:
        job, seconds = run("hang", "exit", deadline_s=120)
        self.assertLess(seconds, 30, "the hanging peer is stopped when the other rank fails, not at the deadline")
        crashed, stopped = job.exits()[1].as_log(RankLog), job.exits()[0].as_log(RankLog)
        self.assertIn("rank 1 exited with exit code 3 and wrote no log", crashed.error)
        self.assertIn("rank 1 gives up", crashed.error, "the end of its output is shown")
        self.assertIn("rank 0 was stopped by the kit because rank 1 failed first", stopped.error)

    def test_a_process_not_yet_leading_its_own_group_is_stopped_too(self) -> None:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])  # in this test's group
        self.addCleanup(process.kill)
        with_group(process, signal.SIGKILL)
        self.assertEqual(process.wait(timeout=30), -signal.SIGKILL)

    def test_a_rank_reporting_an_error_stops_its_peers(self) -> None:
        job, seconds = run("error", "hang", deadline_s=120)
        self.assertLess(seconds, 30)
        self.assertEqual(job.exits()[0].as_log(RankLog).error, "ValueError: rank 0 went wrong")
        self.assertIn("stopped by the kit because rank 0 failed first", job.exits()[1].as_log(RankLog).error)

    def test_a_rank_stopped_before_it_opened_its_output_has_none(self) -> None:
        # A forked rank opens its output file after the fork: a peer's error can stop it before that (seen in CI as
        # a FileNotFoundError out of the launcher). The job's folder is gone once it finished: no output file.
        job, _ = run("ok", "ok")
        self.assertEqual(job._output(1), "")

    def test_killing_a_rank_kills_its_own_children(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            pid_file = Path(folder) / "child.pid"
            run("hang_with_child", "exit", child_pid_file=str(pid_file))
            child = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(alive(child), "a loader worker or other child of a killed rank must not outlive it")

    def test_a_rank_that_succeeds_leaves_no_process_behind(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            pid_file = Path(folder) / "child.pid"
            job, _ = run("ok_leaving_a_child", child_pid_file=str(pid_file))
            child = int(pid_file.read_text())
        self.assertIsNone(job.exits()[0].as_log(RankLog).error)
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertFalse(alive(child), "a process a rank started and left running must end with its job (NeMo's "
                                       "checkpoint writer leaves a 350 MB multiprocessing Manager per save)")

    def test_output_goes_to_a_file_so_a_chatty_rank_cannot_block(self) -> None:
        job, _ = run("chatty", "ok", deadline_s=60)
        self.assertIsNone(job.exits()[0].as_log(RankLog).error)
        self.assertIn("line 39999", job.exits()[0].output)

    def test_a_rendezvous_port_taken_meanwhile_is_replaced(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            with mock.patch("conformance.runs.processes._free_port", side_effect=[busy, _free_port()]) as ports:
                job = RankJob("tests.rank_programs", {"behaviour": ["rendezvous", "rendezvous"]}, 2, deadline_s=120)
                finish_jobs([job])
        self.assertEqual(ports.call_count, 2, "started again on another port")
        self.assertEqual([exit_.as_log(RankLog).error for exit_ in job.exits()], [None, None])

    def test_a_planned_kill_by_signal_is_no_failure_and_stops_no_peer(self) -> None:
        job, _ = run("planned_kill", "ok")
        log = job.exits()[0].as_log(RankLog)
        self.assertEqual((log.error, log.killed_by_signal), (None, 9))
        self.assertIsNone(job.exits()[1].stopped_by_kit)


if __name__ == "__main__":
    unittest.main()


class TestRankJobWithoutForkServer(TestRankJob):
    """The same guarantees where ranks are started as new interpreters (no os.fork, or CONFORMANCE_FORK_SERVER=0)."""

    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, {"CONFORMANCE_FORK_SERVER": "0"})
        patcher.start()
        self.addCleanup(patcher.stop)


class TestForkServer(unittest.TestCase):
    def test_forked_ranks_take_the_request_environment_and_their_own_session(self) -> None:
        server = fork_server()
        self.assertIsNotNone(server)
        with tempfile.TemporaryDirectory() as folder:
            output, spec, result = (Path(folder) / name for name in ("out.txt", "spec.json", "result.json"))
            spec.write_text(json.dumps({"rank": 0, "behaviour": ["environment"], "output": str(result)}))
            process = server.spawn("tests.rank_programs", [str(spec)], output=str(output),
                                   env={**os.environ, "RANK": "1", "SOMETHING_NEW": "yes"})
            self.assertEqual(process.wait(), 0, output.read_text())
            seen = json.loads(result.read_text())
        self.assertEqual(seen["SOMETHING_NEW"], "yes")
        self.assertEqual(seen["rank_zero_only"], 1, "Lightning's rank as read at import, set again from RANK")
        self.assertEqual(seen["session"], process.pid, "its own session, so killing it takes its children along")

    def test_more_libraries_can_be_preloaded_by_name(self) -> None:
        with mock.patch.dict(os.environ, {"CONFORMANCE_PRELOAD": " numpy, json ,"}):
            self.assertEqual(preloaded(), [*PRELOADED, "numpy", "json"])

    def test_a_dead_server_cannot_hang_the_wait_for_its_children(self) -> None:
        server = ForkServer()  # a server of its own, to kill
        self.addCleanup(server.close)
        with tempfile.TemporaryDirectory() as folder:
            spec = Path(folder) / "spec.json"
            spec.write_text(json.dumps({"rank": 0, "behaviour": ["hang"], "output": str(Path(folder) / "out.json")}))
            process = server.spawn("tests.rank_programs", [str(spec)], env=dict(os.environ),
                                   output=str(Path(folder) / "out.txt"))
            server._server.kill()
            server._server.wait()
            os.killpg(process.pid, signal.SIGKILL)
            started = time.monotonic()
            self.assertEqual(process.wait(), EXIT_UNKNOWN)
            self.assertLess(time.monotonic() - started, 10)
