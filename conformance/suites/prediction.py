"""PredictionWriterConformance: predictions streamed to disk are complete, ordered, equal to the in-memory ones,
crash-safe and written in flat memory.

Runs (once per class): a reference predict on one model replica with ``return_predictions=True``; the same on
two replicas in gloo-joined processes; the writer switched to the epoch interval and to ``files_per_subdir=2``
(for writers with ``replace``); a run that raises mid-predict; a run killed mid-write, then resumed into the same
folder; and a run whose resident memory is sampled after every batch. Written predictions are always read back
with the kit's own reader and compared with the in-memory predictions, ordered by the adopter's
``sample_ids(prediction)``. A replica is ``model_parallel_size`` ranks (tensor x context x pipeline parallel, under
the recipe's own ``strategy``); only its first rank's outputs are expected on disk and compared.
"""

from __future__ import annotations

import math
import signal
import tempfile
import warnings
from pathlib import Path
from typing import Any, ClassVar

import torch

from conformance._text import listing
from conformance.compare import compare
from conformance.errors import ConformanceSetupError, PredictionReadError
from conformance.predictions import reader
from conformance.predictions.collate import collate, flatten_prediction, take_rows
from conformance.predictions.reader import NoPredictionsFound, PredictionSet
from conformance.predictions.writer import PredictionWriter
from conformance.runs.lightning.predict import OWNED_TRAINER_KWARGS, PredictLog, PredictPlan, load_memory, run_predict
from conformance.runs.lightning.setup_checks import writer_problems
from conformance.runs.lightning.trainer import environment_label
from conformance.sample_ids import default_sample_ids, ids_as_list
from conformance.suites._base import ConformanceSuite
from conformance.suites._capabilities import WriterCapabilities
from conformance.suites._prediction_files import (
    layout_problems,
    subdir_problems,
    unreadable_files,
    unsafe_file_problems,
)

__all__ = ["PredictionWriterConformance"]

_MIB = 1 << 20
#: Without ``make_memory_datamodule()``, the memory run repeats the default predict loader up to this many batches.
_MAX_REPEATED_MEMORY_BATCHES = 20_000
#: The share of a repeated memory run's payload reckoned to come after its warm-up (a fifth of the batches), with
#: margin.
_COUNTED_AFTER_WARMUP = 0.75


class PredictionWriterConformance(ConformanceSuite, suite=True):
    """Mixin certifying a prediction writer (the kit's by default) on the adopter's model and data module."""

    owned_trainer_kwargs: ClassVar[frozenset[str]] = OWNED_TRAINER_KWARGS
    #: Ranks per model replica: every run uses a multiple of it, with the strategy of ``trainer_kwargs()``.
    model_parallel_size: ClassVar[int] = 1
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
    memory: ClassVar[dict[str, list[list[Any]]]]  # in-memory predictions of a run, per model replica
    writer: ClassVar[WriterCapabilities]
    #: The output is read by the kit's reader (the ``read_predictions`` hook is not overridden): the kit's layout.
    kit_layout: ClassVar[bool]
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
        """A data module predicting enough to measure memory growth; default: ``make_datamodule()``, its predict
        loader repeated until ``memory_check_min_payload_mib`` is predicted after the warm-up."""
        return cls.make_datamodule()

    @classmethod
    def read_predictions(cls, folder: Path, *, allow_incomplete: bool = False) -> PredictionSet:
        """The predictions a run wrote into ``folder``, in sample-id order; default: :func:`conformance.read_predictions`.

        Override it for a writer with a format of its own (raise :class:`conformance.PredictionReadError` for output
        that cannot be read); the checks of the kit's file layout and file safety are then skipped, saying why.
        """
        return reader.read_predictions(folder, allow_incomplete=allow_incomplete)

    # --- set-up --------------------------------------------------------------------------------------------
    @classmethod
    def recipe_problems(cls) -> list[str]:
        """The writer must be a Lightning callback, built afresh on every call."""
        with tempfile.TemporaryDirectory() as folder:
            return super().recipe_problems() + writer_problems(lambda: cls.make_writer(Path(folder)))

    @classmethod
    def settings_problems(cls) -> list[str]:
        size = cls.model_parallel_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            return [(f"model_parallel_size must be a positive int (the ranks of one model replica: tensor x context "
                     f"x pipeline parallel), got {size!r}")]
        kwargs = cls.trainer_kwargs()
        if isinstance(kwargs, dict) and environment_label(kwargs):
            return [(f"trainer_kwargs() asks for {environment_label(kwargs)}, which the kit runs for training only: "
                     "its emulation does not cover NeMo's predict path. Certify the writer on a GPU (tox -e gpu), or "
                     "with the model under a Lightning strategy on the CPU")]
        if size > 1 and isinstance(kwargs, dict) and "strategy" not in kwargs:
            return [(f"model_parallel_size = {size} needs the model-parallel strategy that forms those replicas: "
                     "return it as trainer_kwargs()['strategy']")]
        return []

    @classmethod
    def prepare(cls) -> None:
        cls.writer = WriterCapabilities.of(cls.make_writer(cls._work_dir / "unused"))
        cls.kit_layout = cls.read_predictions.__func__ is PredictionWriterConformance.read_predictions.__func__
        cls.logs, cls.folders, cls.memory = {}, {}, {}
        cls._run("reference", keep_in_memory=True)
        if any(log.error is not None for log in cls.logs["reference"]):
            return
        cls._require_replicas("reference", 1)
        batches = len(cls._writer_log("reference").computed_batches)
        cls.interrupt_batch = max(1, batches // 2)
        cls._run("two_ranks", replicas=2, keep_in_memory=True)
        if all(log.error is None for log in cls.logs["two_ranks"]):
            cls._require_replicas("two_ranks", 2)
        if cls.writer.replaces_settings:
            cls._run("epoch", writer_changes={"write_interval": "epoch"})
            cls._run("subdirs", writer_changes={"files_per_subdir": 2})
        cls._run("exception", raise_before_batch=cls.interrupt_batch)
        if cls.writer.supports_resume is not False:
            cls._run("killed", folder="crash", kill_during_batch=cls.interrupt_batch, in_subprocess=True)
            try:
                cls.crash_snapshot = cls._read_partial(cls.folders["crash"])
            except PredictionReadError as exc:
                cls.crash_snapshot = str(exc)
            cls._run("resumed", folder="crash")
        cls._run("memory", sample_memory=True, in_subprocess=True, **cls._memory_data())

    @classmethod
    def _memory_data(cls) -> dict[str, Any]:
        """The memory run's data: the recipe's ``make_memory_datamodule()`` where it defines one, else the default
        predict loader repeated until, after the warm-up fifth of the batches, enough is predicted (at most
        :data:`_MAX_REPEATED_MEMORY_BATCHES` batches)."""
        if cls.make_memory_datamodule.__func__ is not PredictionWriterConformance.make_memory_datamodule.__func__:
            return {"memory_datamodule": True}
        payload = cls._writer_log("reference").payload_bytes
        if not sum(payload):
            return {}
        passes = math.ceil(cls.memory_check_min_payload_mib * _MIB / (_COUNTED_AFTER_WARMUP * sum(payload))) + 1
        return {"loader_passes": max(1, min(passes, _MAX_REPEATED_MEMORY_BATCHES // len(payload)))}

    @classmethod
    def _read_partial(cls, folder: Path) -> PredictionSet:
        """What an interrupted run left in ``folder``; nothing at all is a legitimate state there."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoPredictionsFound)
            return cls.read_predictions(folder, allow_incomplete=True)

    @classmethod
    def _run(cls, name: str, *, folder: str | None = None, keep_in_memory: bool = False, replicas: int = 1,
             **plan: Any) -> None:
        cls.folders[name] = cls.folders.setdefault(folder or name, cls._work_dir / (folder or name))
        if "strategy" in cls.trainer_kwargs():  # a strategy of the recipe's own may set up process groups and
            plan["in_subprocess"] = True        # global state: never in the adopter's test process
        cls.logs[name] = run_predict(cls, PredictPlan(str(cls.folders[name]), keep_in_memory=keep_in_memory,
                                                      world_size=replicas * cls.model_parallel_size, **plan))
        if keep_in_memory:
            cls.memory[name] = [load_memory(log) for log in cls.logs[name] if log.replica_first]

    # --- the checks ----------------------------------------------------------------------------------------
    def test_predictions_equal_in_memory(self) -> None:
        """Predictions read back equal ``trainer.predict(return_predictions=True)``, in dataset order."""
        expected = self._in_memory("reference")
        if not expected[0]:
            self.fail_check("the reference run predicted nothing, so there is nothing to compare; give "
                            "make_datamodule() a predict_dataloader with samples")
        self._assert_same(self._read("reference"), expected, "the in-memory predictions")

    def test_every_sample_exactly_once(self) -> None:
        """Two ranks, a partial last batch and an uneven split: every sample is read back once, correctly paired."""
        self._require_run("reference")  # a failed run knows neither its size nor its batches: say it failed
        size, rows = self._writer_log("reference").num_samples, self._batch_rows()
        if size is None or size % max(rows) == 0 or size % 2 == 0:
            self.fail_check(f"the predict dataset has {size} samples in batches of {max(rows)}; the check needs a "
                            "partial last batch and a size that does not divide over 2 ranks: use an odd size that is "
                            "not a multiple of the batch size (e.g. 45 with batches of 4)")
        expected = self._in_memory("two_ranks")
        read = self._read("two_ranks")
        missing = sorted(set(range(size)) - set(read.sample_ids.tolist()))
        if missing or len(read.sample_ids) != size:
            self.fail_check(f"read back {len(read.sample_ids)} samples of {size}; missing ids {listing(missing, 20)}")
        self._assert_same(read, expected, "the two replicas' in-memory predictions")

    def test_file_layout(self) -> None:
        """File names follow the seed's layout, carry each rank's numbers, store ``batch_idx``; nothing is left over."""
        self._require_kit_layout()
        problems = []
        for name in ("reference", "two_ranks"):
            self._require_run(name)
            problems += layout_problems(self.folders[name], self.logs[name])
        self.conclude(problems, "reference and two-rank folders")

    def test_batch_and_epoch_intervals_agree(self) -> None:
        """The epoch interval reads back exactly like the batch interval."""
        self._require_variants()
        self._assert_same(self._read("epoch"), _flat(self._read("reference")),
                          "the batch interval")

    def test_files_per_subdir(self) -> None:
        """With ``files_per_subdir=2`` batch files sit in ``subdir_{batch_idx // 2}`` and read back the same."""
        self._require_variants()
        read = self._read("subdirs")
        self.conclude(subdir_problems(self.folders["subdirs"], 2), "subdir layout")
        self._assert_same(read, _flat(self._read("reference")), "the flat layout")

    def test_exception_leaves_valid_output(self) -> None:
        """After an exception mid-predict every file is readable and holds exactly the finished batches."""
        error = self._first_log("exception").error or ""
        if "InjectedPredictError" not in error:
            self.fail_check(f"the run meant to fail before batch {self.interrupt_batch} ended with: "
                      f"{error or 'no error'}")
        if self.kit_layout:
            self.conclude(unreadable_files(self.folders["exception"]), "files readable")
        try:
            read = self._read_partial(self.folders["exception"])
        except PredictionReadError as exc:
            self.fail_check(f"the output of the failed run cannot be read: {exc}")
        finished = self._in_memory("reference", before_batch=self.interrupt_batch)
        self._assert_same(read, finished, f"the in-memory predictions of batches 0-{self.interrupt_batch - 1}")

    def test_resume_after_crash(self) -> None:
        """A run killed mid-write leaves only valid files; re-running completes exactly, skipping finished batches."""
        if self.writer.supports_resume is False:
            self.skipTest(f"{self.writer.name} declares supports_resume = False: it does not resume a crashed job")
        killed = self._first_log("killed")
        if killed.killed_by_signal != signal.SIGXFSZ:
            self.fail_check(f"the run meant to die writing batch {self.interrupt_batch} was not killed there "
                      f"(exit: {killed.error or 'finished normally'}); the writer wrote less than half a batch")
        if isinstance(self.crash_snapshot, str):
            self.fail_check(f"the killed run left output that cannot be read: {self.crash_snapshot}")
        self._assert_same(self._read("resumed"), self._in_memory("reference"),
                          "the in-memory predictions of an uninterrupted run")
        saved = set(self.crash_snapshot.sample_ids.tolist())
        complete = [batch for batch, ids in enumerate(self._reference_batch_ids()) if ids and set(ids) <= saved]
        recomputed = sorted(set(complete) & set(self._writer_log("resumed").computed_batches))
        if recomputed:
            self.fail_check(f"the resumed run predicted batches {recomputed} again although the killed run had "
                      "written them completely; a resumed job must skip finished batches")

    def test_memory_flat(self) -> None:
        """Resident memory does not grow with the number of predicted batches."""
        self._require_run("memory")
        log = self._writer_log("memory")
        warmup = max(2, len(log.rss_bytes) // 5)
        payload = sum(log.payload_bytes[warmup:]) / _MIB
        if len(log.rss_bytes) <= warmup or payload < self.memory_check_min_payload_mib:
            self.fail_check(f"only {payload:.1f} MiB were predicted after {warmup} warm-up batches"
                            f"{self._repeated_data_note(log)}; at least "
                            f"{self.memory_check_min_payload_mib} MiB are needed to measure growth: return a data "
                            "module that predicts more from the classmethod make_memory_datamodule()")
        growth = (max(log.rss_bytes[warmup:]) - log.rss_bytes[warmup - 1]) / _MIB
        allowed = self.memory_check_max_growth * payload + self.memory_check_slack_mib
        self.note_detail(None, f"RSS grew {growth:.1f} MiB while {payload:.1f} MiB were predicted "
                                      f"({len(log.rss_bytes)} batches); allowed {allowed:.1f} MiB")
        if growth > allowed:
            self.fail_check(f"resident memory grew by {growth:.1f} MiB while {payload:.1f} MiB were predicted "
                      f"after warm-up (allowed {allowed:.1f} MiB): the writer keeps predictions in memory")

    def _repeated_data_note(self, log: PredictLog) -> str:
        """How the default predict data was repeated for the memory run (empty where the recipe gave its own)."""
        if "memory_datamodule" in self._memory_data():
            return ""
        if log.unrepeated_loaders:
            return f" (the default predict data could not be repeated: {'; '.join(log.unrepeated_loaders)})"
        return f" (the default predict data repeated over {len(log.rss_bytes)} batches)"

    def test_files_safe_to_read(self) -> None:
        """Every file loads without unpickling objects (weights_only, safetensors, parquet, JSON manifests)."""
        self._require_kit_layout()
        problems = []
        for name in ("reference", "two_ranks"):
            self._require_run(name)
            problems += unsafe_file_problems(self.folders[name])
        self.conclude(problems, "reference and two-rank folders")

    # --- helpers -------------------------------------------------------------------------------------------
    def _require_run(self, name: str) -> None:
        """Fail the check unless run ``name`` happened and succeeded on every rank."""
        if name not in self.logs:
            self.require_succeeded("reference", self.logs["reference"])
        self.require_succeeded(name, self.logs[name])

    def _first_log(self, name: str) -> PredictLog:
        """The writing rank's log of run ``name``, which may have failed on purpose; fails the check if it never
        ran."""
        if name not in self.logs:
            self._require_run(name)
        return self._writer_log(name)

    @classmethod
    def _writer_log(cls, name: str) -> PredictLog:
        """The log of the rank that writes for data-parallel rank 0 (the first rank of its model replica: global
        rank 0 unless pipeline stages put the writer elsewhere)."""
        logs = cls.logs[name]
        return next((log for log in logs if log.replica_first and log.data_parallel_rank == 0), logs[0])

    @classmethod
    def _require_replicas(cls, name: str, replicas: int) -> None:
        """Raise :class:`ConformanceSetupError` unless run ``name`` formed ``replicas`` model replicas of
        ``model_parallel_size`` ranks, as the recipe's strategy must."""
        firsts = sorted(log.data_parallel_rank for log in cls.logs[name] if log.replica_first)
        if firsts != list(range(replicas)):
            raise ConformanceSetupError(
                f"{cls.__qualname__}: the {name} run had {len(cls.logs[name])} ranks and its strategy formed model "
                f"replicas led by data-parallel ranks {firsts}, not {replicas} replica(s) of model_parallel_size = "
                f"{cls.model_parallel_size} ranks: set model_parallel_size to the ranks of one replica of your "
                "strategy (tensor x context x pipeline parallel; 1 without model parallelism)")

    def _require_variants(self) -> None:
        if not self.writer.replaces_settings:
            self.skipTest(f"make_writer() returns a {self.writer.name} without replace(write_interval=..., "
                          "files_per_subdir=...); this check applies to writers with those settings")

    def _require_kit_layout(self) -> None:
        if not self.kit_layout:
            self.skipTest("read_predictions is overridden: the writer has a format of its own, whose files the kit "
                          "cannot judge; this check applies to the kit's layout and formats")

    def _read(self, name: str) -> PredictionSet:
        """The output of run ``name`` (which must have succeeded), read strictly."""
        self._require_run(name)
        try:
            return self.read_predictions(self.folders[name])
        except PredictionReadError as exc:
            self.fail_check(f"reading the {name} output failed: {exc}")

    def _in_memory(self, name: str, before_batch: int | None = None) -> tuple[list[int], dict[str, torch.Tensor]]:
        """The in-memory predictions of a run (all its ranks) as sample ids and flat tensors, in sample-id order."""
        self._require_run(name)
        flats, ids = [], []
        for rank_predictions in self.memory[name]:
            for batch_idx, prediction in enumerate(rank_predictions):
                flat = flatten_prediction(prediction, f"the in-memory prediction of batch {batch_idx}")
                if flat is None or (before_batch is not None and batch_idx >= before_batch):
                    continue
                flats.append(flat[1])
                ids += ids_as_list(self.sample_ids(prediction), where=f"sample_ids() of batch {batch_idx}")
        if not flats:
            return [], {}
        order = torch.argsort(torch.tensor(ids, dtype=torch.int64), stable=True)
        dims = self.writer.dims
        return [ids[i] for i in order.tolist()], take_rows(collate(flats, dims), dims, order)

    def _reference_batch_ids(self) -> list[list[int]]:
        return [ids_as_list(self.sample_ids(prediction)) if prediction is not None else []
                for prediction in self.memory["reference"][0]]

    def _batch_rows(self) -> list[int]:
        return [len(ids) for ids in self._reference_batch_ids()] or [1]

    def _assert_same(self, read: PredictionSet, expected: tuple[list[int], dict[str, torch.Tensor]],
                     what: str) -> None:
        """Same sample ids in the same order, then the same values within the check's tolerance."""
        got_ids, got = _flat(read)
        want_ids, wanted = expected
        if got_ids != want_ids:
            missing = sorted(set(want_ids) - set(got_ids))
            extra = sorted(set(got_ids) - set(want_ids))
            self.fail_check(f"read back {len(got_ids)} samples, {what} have {len(want_ids)}; missing ids "
                            f"{listing(missing, 20)}, unexpected ids {listing(extra, 20)}")
        result = compare(got, wanted, **self.comparison_options(self.check_name))
        self.note_detail(result.worst, f"{len(got_ids)} samples, {result.leaves_compared} keys")
        if not result.ok:
            self.fail_check(f"the predictions read back differ from {what} (rows in sample-id order)",
                            detail=result.format(10))


def _flat(read: PredictionSet) -> tuple[list[int], dict[str, torch.Tensor]]:
    """A read-back prediction set as sample ids and flat tensors."""
    flat = flatten_prediction(read.predictions, "the predictions read back")
    return read.sample_ids.tolist(), flat[1] if flat is not None else {}
