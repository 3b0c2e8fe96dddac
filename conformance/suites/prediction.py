"""PredictionWriterConformance: predictions streamed to disk are complete, ordered, equal to the in-memory ones,
crash-safe and written in flat memory.

Runs (once per class): a reference predict on one rank with ``return_predictions=True``; the same on two
gloo-joined processes; the writer switched to the epoch interval and to ``files_per_subdir=2`` (for writers with
``replace``); a run that raises mid-predict; a run killed mid-write, then resumed into the same folder; and a
run whose resident memory is sampled after every batch. Written predictions are always read back with the kit's
own reader and compared with the in-memory predictions, ordered by the adopter's ``sample_ids(prediction)``.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any, ClassVar

import torch

from conformance.backends.predict import PredictLog, PredictPlan, load_memory, run_predict
from conformance.collate import CollationDims, collate, flatten_prediction, take_rows
from conformance.compare import compare
from conformance.reading import PredictionReadError, PredictionSet, read_predictions
from conformance.sample_ids import default_sample_ids, ids_as_list
from conformance.suites._base import ConformanceSuite
from conformance.suites.prediction_layout import (
    layout_problems,
    subdir_problems,
    unreadable_files,
    unsafe_file_problems,
)
from conformance.writers import PredictionWriter

__all__ = ["PredictionWriterConformance"]

_MIB = 1 << 20
#: Trainer arguments the prediction runs set themselves.
_KIT_OWNED = frozenset({"devices", "strategy", "callbacks", "default_root_dir", "num_nodes"})


class PredictionWriterConformance(ConformanceSuite, suite=True):
    """Mixin certifying a prediction writer (the kit's by default) on the adopter's model and data module."""

    #: The memory check needs at least this much predicted after its warm-up batches to measure growth.
    memory_check_min_payload_mib: ClassVar[float] = 32.0
    #: Resident memory may grow by this fraction of the predicted bytes (plus ``memory_check_slack_mib``).
    memory_check_max_growth: ClassVar[float] = 0.25
    memory_check_slack_mib: ClassVar[float] = 16.0
    default_tolerances: ClassVar[dict[str, dict[str, float]]] = {
        name: {"atol": 0.0, "rtol": 0.0} for name in (
            "test_predictions_equal_in_memory", "test_every_sample_exactly_once",
            "test_batch_and_epoch_intervals_agree", "test_files_per_subdir", "test_exception_leaves_valid_output",
            "test_resume_after_crash")
    }

    logs: ClassVar[dict[str, list[PredictLog]]]
    folders: ClassVar[dict[str, Path]]  # the resumed run shares the killed run's folder
    memory: ClassVar[dict[str, list[list[Any]]]]  # in-memory predictions of a run, per rank
    writer_name: ClassVar[str]
    writer_has_settings: ClassVar[bool]  # replace(write_interval=..., files_per_subdir=...) exists
    dims: ClassVar[CollationDims]
    crash_snapshot: ClassVar[PredictionSet | str]
    interrupt_batch: ClassVar[int]

    # --- hooks with defaults -------------------------------------------------------------------------------
    @classmethod
    def make_writer(cls, output_dir: Path) -> Any:
        """The writer under test, writing into ``output_dir``; default: the kit's batch-interval PredictionWriter."""
        return PredictionWriter(output_dir)

    @classmethod
    def sample_ids(cls, prediction: Any) -> list[int]:
        """The dataset indices of one batch's prediction; default: its ``idx``/``index``/... entry."""
        return default_sample_ids(prediction)

    @classmethod
    def make_memory_datamodule(cls) -> Any:
        """A data module predicting enough to measure memory growth; default: ``make_datamodule()``."""
        return cls.make_datamodule()

    # --- set-up --------------------------------------------------------------------------------------------
    @classmethod
    def settings_problems(cls) -> list[str]:
        owned = sorted(_KIT_OWNED & set(cls.trainer_kwargs()))
        if owned:
            return [f"trainer_kwargs() sets {', '.join(owned)}, which the prediction runs set themselves: remove them"]
        return []

    @classmethod
    def prepare(cls) -> None:
        writer = cls.make_writer(cls._work_dir / "unused")
        cls.writer_name = type(writer).__qualname__
        cls.writer_has_settings = hasattr(writer, "replace")
        cls.dims = getattr(writer, "dims", CollationDims())
        cls.logs, cls.folders, cls.memory = {}, {}, {}
        cls._run("reference", keep_in_memory=True)
        if cls.logs["reference"][0].error is not None:
            return
        batches = len(cls.logs["reference"][0].computed_batches)
        cls.interrupt_batch = max(1, batches // 2)
        cls._run("two_ranks", world_size=2, keep_in_memory=True)
        if cls.writer_has_settings:
            cls._run("epoch", writer_changes={"write_interval": "epoch"})
            cls._run("subdirs", writer_changes={"files_per_subdir": 2})
        cls._run("exception", raise_before_batch=cls.interrupt_batch)
        cls._run("killed", folder="crash", kill_during_batch=cls.interrupt_batch, in_subprocess=True)
        try:
            cls.crash_snapshot = read_predictions(cls.folders["crash"], allow_incomplete=True)
        except PredictionReadError as exc:
            cls.crash_snapshot = str(exc)
        cls._run("resumed", folder="crash")
        cls._run("memory", memory_datamodule=True, sample_memory=True, in_subprocess=True)

    @classmethod
    def _run(cls, name: str, *, folder: str | None = None, keep_in_memory: bool = False, **plan: Any) -> None:
        cls.folders[name] = cls.folders.setdefault(folder or name, cls._work_dir / (folder or name))
        cls.logs[name] = run_predict(cls, PredictPlan(str(cls.folders[name]), keep_in_memory=keep_in_memory, **plan))
        if keep_in_memory:
            cls.memory[name] = [load_memory(log) for log in cls.logs[name]]

    # --- the checks ----------------------------------------------------------------------------------------
    def test_predictions_equal_in_memory(self) -> None:
        """Predictions read back equal ``trainer.predict(return_predictions=True)``, in dataset order."""
        check = "test_predictions_equal_in_memory"
        expected = self._in_memory("reference")
        if not expected[0]:
            self.fail(f"{check}: the reference run predicted nothing, so there is nothing to compare; give "
                      "make_datamodule() a predict_dataloader with samples")
        self._assert_same(check, self._read(check, "reference"), expected, "the in-memory predictions")

    def test_every_sample_exactly_once(self) -> None:
        """Two ranks, a partial last batch and an uneven split: every sample is read back once, correctly paired."""
        check = "test_every_sample_exactly_once"
        size, rows = self.logs["reference"][0].num_samples, self._batch_rows()
        if size is None or size % max(rows) == 0 or size % 2 == 0:
            self.fail(f"{check}: the predict dataset has {size} samples in batches of {max(rows)}; the check needs "
                      "a partial last batch and a size that does not divide over 2 ranks: use an odd size that is "
                      "not a multiple of the batch size (e.g. 45 with batches of 4)")
        expected = self._in_memory("two_ranks")
        read = self._read(check, "two_ranks")
        missing = sorted(set(range(size)) - set(read.sample_ids.tolist()))
        if missing or len(read.sample_ids) != size:
            self.fail(f"{check}: read back {len(read.sample_ids)} samples of {size}; missing ids {missing[:20]}")
        self._assert_same(check, read, expected, "the two ranks' in-memory predictions")

    def test_file_layout(self) -> None:
        """File names follow the seed's layout, carry each rank's numbers, store ``batch_idx``; nothing is left over."""
        problems = []
        for name, world_size in (("reference", 1), ("two_ranks", 2)):
            self._require_run("test_file_layout", name)
            problems += layout_problems(self.folders[name], world_size,
                                        [log.computed_batches for log in self.logs[name]])
        self._conclude("test_file_layout", problems, "reference and two-rank folders")

    def test_batch_and_epoch_intervals_agree(self) -> None:
        """The epoch interval reads back exactly like the batch interval."""
        check = "test_batch_and_epoch_intervals_agree"
        self._require_variants(check)
        self._assert_same(check, self._read(check, "epoch"), _flat(self._read(check, "reference")),
                          "the batch interval")

    def test_files_per_subdir(self) -> None:
        """With ``files_per_subdir=2`` batch files sit in ``subdir_{batch_idx // 2}`` and read back the same."""
        check = "test_files_per_subdir"
        self._require_variants(check)
        read = self._read(check, "subdirs")
        self._conclude(check, subdir_problems(self.folders["subdirs"], 2), "subdir layout")
        self._assert_same(check, read, _flat(self._read(check, "reference")), "the flat layout")

    def test_exception_leaves_valid_output(self) -> None:
        """After an exception mid-predict every file is readable and holds exactly the finished batches."""
        check = "test_exception_leaves_valid_output"
        error = self._first_log(check, "exception").error or ""
        if "InjectedPredictError" not in error:
            self.fail(f"{check}: the run meant to fail before batch {self.interrupt_batch} ended with: "
                      f"{error or 'no error'}")
        self._conclude(check, unreadable_files(self.folders["exception"]), "files readable")
        try:
            read = read_predictions(self.folders["exception"], allow_incomplete=True)
        except PredictionReadError as exc:
            self.fail(f"{check}: the output of the failed run cannot be read: {exc}")
        finished = self._in_memory("reference", before_batch=self.interrupt_batch)
        self._assert_same(check, read, finished, f"the in-memory predictions of batches 0-{self.interrupt_batch - 1}")

    def test_resume_after_crash(self) -> None:
        """A run killed mid-write leaves only valid files; re-running completes exactly, skipping finished batches."""
        check = "test_resume_after_crash"
        killed = self._first_log(check, "killed")
        if killed.killed_by_signal != signal.SIGXFSZ:
            self.fail(f"{check}: the run meant to die writing batch {self.interrupt_batch} was not killed there "
                      f"(exit: {killed.error or 'finished normally'}); the writer wrote less than half a batch")
        if isinstance(self.crash_snapshot, str):
            self.fail(f"{check}: the killed run left output that cannot be read: {self.crash_snapshot}")
        self._assert_same(check, self._read(check, "resumed"), self._in_memory("reference"),
                          "the in-memory predictions of an uninterrupted run")
        saved = set(self.crash_snapshot.sample_ids.tolist())
        complete = [batch for batch, ids in enumerate(self._reference_batch_ids()) if ids and set(ids) <= saved]
        recomputed = sorted(set(complete) & set(self.logs["resumed"][0].computed_batches))
        if recomputed:
            self.fail(f"{check}: the resumed run predicted batches {recomputed} again although the killed run had "
                      "written them completely; a resumed job must skip finished batches")

    def test_memory_flat(self) -> None:
        """Resident memory does not grow with the number of predicted batches."""
        check = "test_memory_flat"
        self._require_run(check, "memory")
        log = self.logs["memory"][0]
        warmup = max(2, len(log.rss_bytes) // 5)
        payload = sum(log.payload_bytes[warmup:]) / _MIB
        if len(log.rss_bytes) <= warmup or payload < self.memory_check_min_payload_mib:
            self.fail(f"{check}: only {payload:.1f} MiB were predicted after {warmup} warm-up batches; at least "
                      f"{self.memory_check_min_payload_mib} MiB are needed to measure growth: return a bigger data "
                      "module from make_memory_datamodule()")
        growth = (max(log.rss_bytes[warmup:]) - log.rss_bytes[warmup - 1]) / _MIB
        allowed = self.memory_check_max_growth * payload + self.memory_check_slack_mib
        self.note_detail(check, None, f"RSS grew {growth:.1f} MiB while {payload:.1f} MiB were predicted "
                                      f"({len(log.rss_bytes)} batches); allowed {allowed:.1f} MiB")
        if growth > allowed:
            self.fail(f"{check}: resident memory grew by {growth:.1f} MiB while {payload:.1f} MiB were predicted "
                      f"after warm-up (allowed {allowed:.1f} MiB): the writer keeps predictions in memory")

    def test_files_safe_to_read(self) -> None:
        """Every file loads without unpickling objects (weights_only, safetensors, parquet, JSON manifests)."""
        problems = []
        for name in ("reference", "two_ranks"):
            self._require_run("test_files_safe_to_read", name)
            problems += unsafe_file_problems(self.folders[name])
        self._conclude("test_files_safe_to_read", problems, "reference and two-rank folders")

    # --- helpers -------------------------------------------------------------------------------------------
    def _require_run(self, check: str, name: str) -> None:
        if name not in self.logs:
            self.fail(f"{check}: the {name} run did not happen because the reference run failed: "
                      f"{self.logs['reference'][0].error}")
        errors = [f"rank {log.rank}: {log.error}" for log in self.logs[name] if log.error is not None]
        if errors:
            self.fail(f"{check}: the {name} run failed:\n" + "\n".join(errors))

    def _first_log(self, check: str, name: str) -> PredictLog:
        """Rank 0's log of run ``name``, which may have failed on purpose; fails the check if it never ran."""
        if name not in self.logs:
            self._require_run(check, name)
        return self.logs[name][0]

    def _require_variants(self, check: str) -> None:
        if not self.writer_has_settings:
            self.skipTest(f"make_writer() returns a {self.writer_name} "
                          "without replace(write_interval=..., files_per_subdir=...); this check applies to writers "
                          "with those settings")

    def _read(self, check: str, name: str) -> PredictionSet:
        """The output of run ``name`` (which must have succeeded), read strictly."""
        self._require_run(check, name)
        try:
            return read_predictions(self.folders[name])
        except PredictionReadError as exc:
            self.fail(f"{check}: reading the {name} output failed: {exc}")

    def _in_memory(self, name: str, before_batch: int | None = None) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The in-memory predictions of a run (all its ranks) as sample ids and flat tensors, in sample-id order."""
        self._require_run("in-memory predictions", name)
        flats, ids = [], []
        for rank_predictions in self.memory[name]:
            for batch_idx, prediction in enumerate(rank_predictions):
                flat = flatten_prediction(prediction, f"the in-memory prediction of batch {batch_idx}")
                if flat is None or (before_batch is not None and batch_idx >= before_batch):
                    continue
                flats.append(flat[1])
                ids += ids_as_list(self.sample_ids(prediction), where=f"sample_ids() of batch {batch_idx}")
        order = torch.argsort(torch.tensor(ids, dtype=torch.int64), stable=True)
        return [ids[i] for i in order.tolist()], take_rows(collate(flats, self.dims), self.dims, order) if flats else {}

    def _reference_batch_ids(self) -> list[list[int]]:
        return [ids_as_list(self.sample_ids(prediction)) if prediction is not None else []
                for prediction in self.memory["reference"][0]]

    def _batch_rows(self) -> list[int]:
        return [len(ids) for ids in self._reference_batch_ids()] or [1]

    def _assert_same(self, check: str, read: PredictionSet, expected: tuple[list[int], dict[str, torch.Tensor]],
                     what: str) -> None:
        """Same sample ids in the same order, then the same values within the check's tolerance."""
        got_ids, got = _flat(read)
        want_ids, wanted = expected
        if got_ids != want_ids:
            missing = sorted(set(want_ids) - set(got_ids))
            extra = sorted(set(got_ids) - set(want_ids))
            self.fail(f"{check}: read back {len(got_ids)} samples, {what} have {len(want_ids)}; missing ids "
                      f"{missing[:20]}, unexpected ids {extra[:20]}")
        result = compare(got, wanted, **self.comparison_options(check))
        self.note_detail(check, result.worst, f"{len(got_ids)} samples, {result.leaves_compared} keys")
        if not result.ok:
            self.fail(f"{check}: the predictions read back differ from {what} (rows in sample-id order):\n"
                      f"{result.format(10)}")

    def _conclude(self, check: str, problems: list[str], summary: str) -> None:
        if problems:
            shown = "\n".join(f"  - {problem}" for problem in problems[:20])
            self.fail(f"{check}: {len(problems)} problem(s)\n{shown}")
        self.note_detail(check, None, summary)


def _flat(read: PredictionSet) -> tuple[list[int], dict[str, torch.Tensor]]:
    """A read-back prediction set as sample ids and flat tensors."""
    flat = flatten_prediction(read.predictions, "the predictions read back")
    return read.sample_ids.tolist(), flat[1] if flat is not None else {}
