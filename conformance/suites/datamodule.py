"""DataModuleResumeConformance: data restored from a checkpoint continues at exactly the next sample.

The data is drawn by the class's data backend (:mod:`conformance.runs.data_backends`): a Lightning data module
(``make_datamodule``) through real Lightning fits of a probe model that records only sample ids, or a stateful
loader (``make_loader``) that the kit iterates in its own epoch loop. The reference is an uninterrupted run of
``num_epochs`` epochs; every other run is compared with it step by step (the samples of one optimizer step, over all
micro-batches and ranks). Runs that crash after a step save their checkpoint first.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from conformance._setup_checks import batch_size_problems
from conformance._text import listing
from conformance.errors import ElasticResumeRefused
from conformance.runs.data_backends import data_backend_for
from conformance.runs.data_probe import DataBackend, DataCapabilities, ProbeLog, ProbePlan, consumed_problems
from conformance.runs.lightning.probe import OWNED_TRAINER_KWARGS
from conformance.sample_ids import default_sample_ids
from conformance.suites._assertions import run_failures
from conformance.suites._base import ConformanceSuite

__all__ = ["DataModuleResumeConformance"]

Steps = dict[int, list[int]]  # optimizer step number (1-based) -> sample ids it consumed, in order


def step_samples(logs: list[ProbeLog]) -> Steps:
    """The samples of each optimizer step, ranks in order, micro-batches in order within a rank."""
    steps: Steps = {}
    for log in logs:
        for global_step, _, ids in log.train:
            steps.setdefault(global_step + 1, []).extend(ids)
    return steps


def step_epochs(logs: list[ProbeLog]) -> dict[int, int]:
    """The epoch each optimizer step belongs to."""
    return {global_step + 1: epoch for log in logs for global_step, epoch, _ in log.train}


class DataModuleResumeConformance(ConformanceSuite, suite=True):
    """Mixin certifying that a data module or stateful loader resumes at exactly the next sample, on any worker and
    rank count."""

    required_hooks: ClassVar[tuple[str, ...]] = ("make_datamodule",)  # or make_loader: see hooks_required
    owned_trainer_kwargs: ClassVar[frozenset[str]] = OWNED_TRAINER_KWARGS
    #: Epochs of the uninterrupted reference run (at least 2: resume must also work in a later epoch).
    num_epochs: ClassVar[int] = 2

    datamodule: ClassVar[DataCapabilities]
    reference: ClassVar[list[ProbeLog]]
    interrupt_points: ClassVar[dict[str, int]]
    interrupted: ClassVar[dict[str, list[ProbeLog]]]
    resumed: ClassVar[dict[str, list[ProbeLog]]]

    # --- hooks with defaults -------------------------------------------------------------------------------
    @classmethod
    def sample_ids(cls, batch: Any) -> list[int]:
        """The dataset indices of a batch's samples; default: the batch's ``idx``/``index``/... entry."""
        return default_sample_ids(batch)

    @classmethod
    def set_num_workers(cls, datamodule: Any, num_workers: int) -> None:
        """Make ``datamodule`` load with ``num_workers`` worker processes; default: set its ``num_workers``."""
        if not hasattr(datamodule, "num_workers"):
            raise AttributeError(
                f"{type(datamodule).__qualname__} has no num_workers attribute; give it one that its loaders use, "
                "or override the classmethod set_num_workers(datamodule, num_workers)"
            )
        datamodule.num_workers = num_workers

    @classmethod
    def start_epoch(cls, loader: Any, epoch: int) -> None:
        """(``make_loader`` recipes) Called before each epoch's ``iter(loader)``, as a training script does; default:
        ``set_epoch(epoch)`` on the loader's sampler (or its batch sampler's sampler) where it has one, as
        ``DistributedSampler`` needs to reshuffle."""
        batch_sampler = getattr(loader, "batch_sampler", None)
        for sampler in (getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
            if callable(getattr(sampler, "set_epoch", None)):
                sampler.set_epoch(epoch)
                return

    # --- set-up --------------------------------------------------------------------------------------------
    @classmethod
    def backend(cls) -> DataBackend:
        """The backend that draws this class's data, chosen from the hooks it defines."""
        return data_backend_for(cls)

    @classmethod
    def hooks_required(cls) -> tuple[str, ...]:
        """``make_loader`` for a stateful loader the kit iterates, otherwise ``make_datamodule``."""
        return cls.backend().required_hooks

    @classmethod
    def settings_problems(cls) -> list[str]:
        if not isinstance(cls.num_epochs, int) or cls.num_epochs < 2:
            return [f"num_epochs must be an int >= 2, got {cls.num_epochs!r}: resume is also checked in epoch 2"]
        return []

    @classmethod
    def datamodule_problems(cls, datamodule: Any, data_parallel_ranks: int = 1) -> list[str]:
        """The data module needs Megatron-style batch sizes whose global batch splits over the two-rank runs."""
        return batch_size_problems(datamodule, divisible_by_ranks=2, why="the data-parallel checks run on 2 ranks")

    @classmethod
    def prepare(cls) -> None:
        """The uninterrupted reference, then a crash and a resume at each interrupt point."""
        cls.datamodule = cls.backend().capabilities(cls)
        cls.reference = cls.probe(ProbePlan(max_epochs=cls.num_epochs))
        cls.interrupted, cls.resumed, cls.interrupt_points = {}, {}, {}
        if cls.reference[0].error is None:
            cls.interrupt_points = _interrupt_points(step_epochs(cls.reference))
            for name, step in cls.interrupt_points.items():
                cls.interrupted[name], cls.resumed[name] = cls._crash_and_resume(step, f"{name}.ckpt")

    @classmethod
    def probe(cls, plan: ProbePlan) -> list[ProbeLog]:
        """One probe run of the class's data; one log per rank."""
        return cls.backend().run_probe(cls, plan)

    @classmethod
    def _crash_and_resume(cls, step: int, checkpoint_name: str, *, world_size: int = 1,
                          resume_world_size: int | None = None, num_workers: int | None = None,
                          ) -> tuple[list[ProbeLog], list[ProbeLog]]:
        """Crash after ``step`` (checkpoint in the class's work folder), then resume, possibly on other ranks."""
        checkpoint = str(cls._work_dir / checkpoint_name)
        interrupted = cls.probe(ProbePlan(cls.num_epochs, world_size=world_size, num_workers=num_workers,
                                               stop_after_step=step, checkpoint=checkpoint))
        resumed = cls.probe(ProbePlan(cls.num_epochs, world_size=resume_world_size or world_size,
                                           num_workers=num_workers, resume_from=checkpoint))
        return interrupted, resumed

    # --- the checks ----------------------------------------------------------------------------------------
    def test_resume_continues_exactly(self) -> None:
        """At every interrupt point the resumed run draws exactly the uninterrupted run's samples, in order."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        problems = [problem for name in self.interrupt_points
                    for problem in self._trajectory_problems(name, expected, self.interrupted[name],
                                                             self.resumed[name], ordered=True)]
        self.conclude(problems, f"{len(self.interrupt_points)} interrupt points, {len(expected)} steps")

    def test_no_sample_repeated_or_skipped(self) -> None:
        """Around every resume, each epoch uses every sample of the uninterrupted epoch exactly once."""
        self._skip_if_not_applicable()
        self._reference_steps()
        reference_epochs = _samples_by_epoch(self.reference)
        problems = []
        for name, step in self.interrupt_points.items():
            self.require_succeeded(f"{name} interrupted or resumed", self.interrupted[name] + self.resumed[name])
            before = _samples_by_epoch(self.interrupted[name], last_step=step)
            after = _samples_by_epoch(self.resumed[name], first_step=step + 1)
            for epoch, expected in reference_epochs.items():
                drawn = Counter(before.get(epoch, Counter())) + Counter(after.get(epoch, Counter()))
                problems += _coverage_problems(f"{name} (stop after step {step}), epoch {epoch}", drawn, expected)
        self.conclude(problems, f"{len(reference_epochs)} epochs x {len(self.interrupt_points)} resumes")

    def test_num_workers(self) -> None:
        """With 0 and with 2 loader worker processes, uninterrupted and resumed streams are the reference's (for an
        iterable dataset, whose order depends on the worker count by design, the 2-worker uninterrupted stream is
        the resumed run's reference, and it must use every sample of each epoch exactly once)."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        step = self.interrupt_points["mid_epoch"]
        problems = []
        for workers in (0, 2):
            label = f"num_workers={workers}"
            whole = self.probe(ProbePlan(self.num_epochs, num_workers=workers))
            interrupted, resumed = self._crash_and_resume(step, f"workers{workers}.ckpt", num_workers=workers)
            if workers and self.datamodule.order_depends_on_workers:
                problems += self._epoch_coverage_problems(f"{label}, uninterrupted", whole)
                reference = step_samples(whole)
            else:
                problems += self._stream_problems(f"{label}, uninterrupted", expected, whole, ordered=True)
                reference = expected
            problems += self._trajectory_problems(f"{label}, mid_epoch", reference, interrupted, resumed,
                                                  ordered=True)
            if not run_failures(label, interrupted + resumed):
                saved = self.backend().saved_consumed_samples(type(self), self._work_dir / f"workers{workers}.ckpt")
                problems += self._consumed_problems(f"{label}: the checkpoint of step {step} holds", step, saved)
                problems += self._consumed_problems(f"{label}, mid_epoch: at the start of the resumed run the data "
                                                    "module reports", step, _start_consumed(resumed))
        order = (" (an iterable dataset: the 2-worker run is its own order's reference)"
                 if self.datamodule.order_depends_on_workers else "")
        self.conclude(problems, f"num_workers 0 and 2, uninterrupted and resumed{order}{self._consumed_note()}")

    def _epoch_coverage_problems(self, name: str, logs: list[ProbeLog]) -> list[str]:
        """Problems unless every epoch of ``logs`` uses every sample of the reference's epoch exactly once."""
        failures = run_failures(name, logs)
        if failures:
            return failures
        drawn = _samples_by_epoch(logs)
        return [problem for epoch, expected in _samples_by_epoch(self.reference).items()
                for problem in _coverage_problems(f"{name}, epoch {epoch}", drawn.get(epoch, Counter()), expected)]

    def test_multi_epoch_shuffle(self) -> None:
        """Epochs are shuffled differently, and a resume in a later epoch continues that epoch's own order."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        orders: dict[int, list[int]] = {}
        for step, epoch in step_epochs(self.reference).items():
            orders.setdefault(epoch, []).extend(expected[step])
        problems = []
        if len(orders) < 2:
            problems.append(f"the uninterrupted run covered {len(orders)} epoch(s); need at least 2")
        elif orders[0] == orders[1]:
            problems.append(f"epochs 0 and 1 draw the samples in the same order ({listing(orders[0])}): the shuffle "
                            "ignores the epoch (seed it with seed + epoch)")
        name = "mid_second_epoch"
        problems += self._trajectory_problems(name, expected, self.interrupted[name],
                                              self.resumed[name], ordered=True)
        self.conclude(problems, f"{len(orders)} epochs")

    def test_repeated_resumes(self) -> None:
        """Resume, train, save, resume again (three times, the last in the second epoch): samples and consumed
        samples stay exact across every resume."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        stops = [self.interrupt_points[name] for name in ("first_step", "mid_epoch", "mid_second_epoch")]
        chain = [("interrupted", self.interrupted["first_step"], 1, stops[0])]
        checkpoint = self._work_dir / "first_step.ckpt"
        for number, (resumed_at, stop) in enumerate(zip(stops, [*stops[1:], None]), start=2):
            saved = self._work_dir / f"resume_{number}.ckpt"
            logs = self.probe(ProbePlan(self.num_epochs, resume_from=str(checkpoint),
                                                   stop_after_step=stop, checkpoint=str(saved) if stop else None))
            chain.append((f"resumed at step {resumed_at}", logs, resumed_at + 1, stop or max(expected)))
            checkpoint = saved
        problems = []
        for name, logs, start, stop in chain:
            self.require_succeeded(name, logs)
            drawn = {s: ids for s, ids in step_samples(logs).items() if start <= s <= stop}
            problems += _compare_steps(f"steps {start}..{stop}", drawn,
                                       {s: ids for s, ids in expected.items() if start <= s <= stop}, ordered=True)
            if start > 1:
                problems += self._consumed_problems(f"after resuming at step {start - 1} the data module reports",
                                                    start - 1, _start_consumed(logs))
        self.conclude(problems, f"resumed after steps {', '.join(map(str, stops))} (the last in epoch 2)"
                                f"{self._consumed_note()}")

    def test_validation_starts_at_first_sample(self) -> None:
        """Every validation pass, including the first after each resume, is the uninterrupted run's first pass."""
        self._skip_if_not_applicable()
        self._reference_steps()
        passes = _validation_passes(self.reference)
        if not passes:
            self.fail_check("the data module ran no validation; give it a val_dataloader (or list the check in "
                            "expected_failures if it has none)")
        first_pass = next(iter(passes.values()))
        problems = []
        for name, logs in [("uninterrupted", self.reference)] + [(f"resumed {n}", l) for n, l in self.resumed.items()]:
            self.require_succeeded(name, logs)
            for step, samples in _validation_passes(logs).items():
                if samples != first_pass:
                    problems.append(f"{name}: the validation after step {step} drew {listing(samples)}, expected the "
                                    f"first validation's {listing(first_pass)}")
                    break
        self.conclude(problems, f"{len(passes)} validation passes in the reference")

    def test_checkpoint_state(self) -> None:
        """The data's state is in each checkpoint and loadable as checkpoints load it, small, and (where the data
        keeps one) counts step x batch consumed samples."""
        self._skip_if_not_applicable()
        self._reference_steps()
        problems = []
        for name, step in self.interrupt_points.items():
            self.require_succeeded(f"{name} interrupted", self.interrupted[name])
            found = self.backend().checkpoint_state_problems(type(self), self._work_dir / f"{name}.ckpt", step)
            problems += [f"{name}: {problem}" for problem in found]
        self.conclude(problems, f"{len(self.interrupt_points)} checkpoints{self._consumed_note()}")

    def test_state_restored_before_first_batch(self) -> None:
        """When the resumed run starts training, the data module already reports the restored position."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        problems = []
        for name, step in self.interrupt_points.items():
            logs = self.resumed[name]
            self.require_succeeded(name, logs)
            problems += self._consumed_problems(f"{name}: at the start of the resumed run the data module reports",
                                                step, _start_consumed(logs))
            first, wanted = step_samples(logs).get(step + 1, []), expected.get(step + 1, [])
            if first == wanted:
                continue
            problem = f"{name}: the first resumed step drew {listing(first)}, expected {listing(wanted)}"
            restarted = first in [expected[epoch_start] for epoch_start in _epoch_first_steps(self.reference)]
            if restarted and _start_consumed(logs) == step * self.datamodule.global_batch_size:
                problem += (": the loader started over at an epoch's first sample although the data module reports "
                            "the restored position, so the state was applied after the loader was built (e.g. the "
                            "sampler is created in setup(), which Lightning calls before it restores the checkpoint)")
            problems.append(problem)
        self.conclude(problems, f"{len(self.interrupt_points)} resumes")

    def test_data_parallel_streams(self) -> None:
        """On 2 ranks (real gloo processes) the ranks' samples are disjoint and together are the global stream."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        step = self.interrupt_points["mid_epoch"]
        whole = self.probe(ProbePlan(self.num_epochs, world_size=2))
        interrupted, resumed = self._crash_and_resume(step, "dp2.ckpt", world_size=2)
        problems = self._rank_overlap_problems("2 ranks, uninterrupted", whole)
        problems += self._rank_overlap_problems("2 ranks, resumed", resumed)
        problems += self._stream_problems("2 ranks, uninterrupted", expected, whole, ordered=False)
        problems += self._trajectory_problems("2 ranks, mid_epoch", expected, interrupted, resumed, ordered=False)
        self.conclude(problems, "world size 2, uninterrupted and resumed")

    def test_elastic_resume(self) -> None:
        """A checkpoint of 2 ranks resumes on 1 and one of 1 rank on 2, global batch fixed, same global stream."""
        self._skip_if_not_applicable()
        expected = self._reference_steps()
        step = self.interrupt_points["mid_epoch"]
        two_to_one = self._crash_and_resume(step, "elastic21.ckpt", world_size=2, resume_world_size=1)
        one_to_two = (self.interrupted["mid_epoch"],
                      self.probe(ProbePlan(self.num_epochs, world_size=2,
                                                resume_from=str(self._work_dir / "mid_epoch.ckpt"))))
        cases = {"2 -> 1 ranks": two_to_one, "1 -> 2 ranks": one_to_two}
        declared = self.datamodule.supports_elastic_resume
        problems, refusals = [], []
        for label, (interrupted, resumed) in cases.items():
            refusing = [log for log in resumed if self._refused_elastic_resume(log)]
            refused = bool(refusing)
            refusals += [f"{label}: {_first_line(log.error)}" for log in refusing[:1]]
            failures = run_failures(label, [log for log in interrupted + resumed
                                            if not self._refused_elastic_resume(log)])
            if failures:
                problems += [f"{failure}\n  (a refusal of a different world size is conformance.ElasticResumeRefused, "
                             "or an error raised through the data module's own load_state_dict before any resumed "
                             "batch; any other failure of these runs is a failure)" for failure in failures]
            elif declared is False and not refused:
                problems.append(f"{label}: the data module declares supports_elastic_resume = False but resumed "
                                "without refusing; raise conformance.ElasticResumeRefused on a different world size")
            elif declared is not False and refused:
                problems.append(f"{label}: the data module refused to resume on another world size "
                                f"({_first_line(refusing[0].error)}) but does not declare supports_elastic_resume = "
                                "False; declare it if refusing is intended")
            elif declared is not False:
                problems += self._trajectory_problems(label, expected, interrupted, resumed, ordered=False)
        self.conclude(problems, f"elastic resume refused, as declared ({'; '.join(refusals)})" if declared is False
                      else "2 -> 1 and 1 -> 2 ranks keep the global stream")

    def _refused_elastic_resume(self, log: ProbeLog) -> bool:
        """Whether a rank ended with a refusal of a different world size: the documented
        :class:`ElasticResumeRefused`, or any error raised through the data's own restore before any batch."""
        documented = f"{ElasticResumeRefused.__module__}.{ElasticResumeRefused.__qualname__}" in log.error_types
        own = not log.train and bool(set(log.raised_through) & self.datamodule.restore_functions)
        return documented or own

    # --- helpers -------------------------------------------------------------------------------------------
    def _reference_steps(self) -> Steps:
        self.require_succeeded("uninterrupted reference", self.reference)
        steps = step_samples(self.reference)
        if not steps:
            self.fail_check("the uninterrupted reference run drew no training batch")
        return steps

    def _trajectory_problems(self, name: str, expected: Steps, interrupted: list[ProbeLog],
                             resumed: list[ProbeLog], *, ordered: bool) -> list[str]:
        """Problems of interrupted (its steps up to the crash) + resumed (the rest) against ``expected``."""
        errors = run_failures(name, interrupted + resumed)
        if errors:
            return errors
        before, after = step_samples(interrupted), step_samples(resumed)
        repeated = sorted(set(before) & set(after))
        if repeated:
            return [f"{name}: the resumed run trained steps {repeated[:5]} again (it restarted too early)"]
        return _compare_steps(name, {**before, **after}, expected, ordered=ordered)

    def _stream_problems(self, name: str, expected: Steps, logs: list[ProbeLog], *, ordered: bool) -> list[str]:
        return run_failures(name, logs) or _compare_steps(name, step_samples(logs), expected, ordered=ordered)

    @staticmethod
    def _rank_overlap_problems(name: str, logs: list[ProbeLog]) -> list[str]:
        per_rank = [step_samples([log]) for log in logs if not log.error]
        problems = []
        for step in sorted(set().union(*per_rank) if per_rank else ()):
            seen = [set(rank.get(step, [])) for rank in per_rank]
            shared = set.intersection(*seen) if len(seen) > 1 else set()
            if shared:
                problems.append(f"{name}: at step {step} ranks share samples {listing(sorted(shared))}")
        return problems

    def _consumed_problems(self, where: str, step: int, consumed: Any) -> list[str]:
        """A problem unless ``consumed`` equals ``step`` global batches; none where the backend's data keeps no
        such count (:meth:`_consumed_note` says so in the check's detail)."""
        if self.backend().unreported_consumed_samples is not None:
            return []
        return consumed_problems(where, step, consumed, self.datamodule.global_batch_size)

    def _consumed_note(self) -> str:
        """How a check's detail says whether consumed samples were part of it."""
        reason = self.backend().unreported_consumed_samples
        return ", consumed samples included" if reason is None else f"; consumed samples n/a: {reason}"


def _first_line(error: str | None) -> str:
    return error.splitlines()[0] if error else ""


def _start_consumed(logs: list[ProbeLog]) -> Any:
    """The consumed samples rank 0's data module reported when training started."""
    return (logs[0].start_state or {}).get("consumed_samples")


def _epoch_first_steps(logs: list[ProbeLog]) -> list[int]:
    """The first optimizer step of every epoch."""
    firsts: dict[int, int] = {}
    for step, epoch in sorted(step_epochs(logs).items()):
        firsts.setdefault(epoch, step)
    return list(firsts.values())


def _interrupt_points(epochs: dict[int, int]) -> dict[str, int]:
    """Named steps to interrupt after, from the reference's step -> epoch map."""
    per_epoch = sum(1 for epoch in epochs.values() if epoch == 0)
    if per_epoch < 3:
        raise AssertionError(f"an epoch has only {per_epoch} optimizer steps; use a dataset of at least 3 global "
                             "batches so the interrupt points differ")
    return {
        "first_step": 1,
        "mid_epoch": per_epoch // 2,
        "before_last_batch": per_epoch - 1,
        "last_step_of_epoch": per_epoch,
        "mid_second_epoch": per_epoch + per_epoch // 2,
    }


def _compare_steps(name: str, drawn: Steps, expected: Steps, *, ordered: bool) -> list[str]:
    """The first differing step (and a count of the others), comparing sample order or only the sample sets."""
    def view(steps: Steps, step: int) -> list[int]:
        samples = steps.get(step, [])
        return samples if ordered else sorted(samples)

    differing = [step for step in sorted(set(drawn) | set(expected)) if view(drawn, step) != view(expected, step)]
    if not differing:
        return []
    step = differing[0]
    what = "samples (in order)" if ordered else "samples (as a set over ranks)"
    message = (f"{name}: step {step} drew {what} {listing(drawn.get(step, []))}, the uninterrupted run "
               f"{listing(expected.get(step, []))}; {len(differing)} of {len(expected)} steps differ")
    return [message]


def _coverage_problems(where: str, drawn: Counter, expected: Counter) -> list[str]:
    """The samples of one epoch that ``drawn`` skipped, repeated, or took from outside the ``expected`` epoch."""
    missing = sorted((expected - drawn).elements())
    repeated = sorted(sample for sample, count in drawn.items() if count > 1)
    foreign = sorted(set(drawn) - set(expected))  # not in the epoch at all; repeats are listed above
    return [f"{where}: {label} samples {listing(ids)}"
            for label, ids in (("skipped", missing), ("repeated", repeated), ("foreign", foreign)) if ids]


def _samples_by_epoch(logs: list[ProbeLog], first_step: int = 1, last_step: int | None = None) -> dict[int, Counter]:
    """Per epoch, how often each sample was drawn by the steps in ``first_step..last_step``."""
    epochs: dict[int, Counter] = {}
    for log in logs:
        for global_step, epoch, ids in log.train:
            step = global_step + 1
            if step >= first_step and (last_step is None or step <= last_step):
                epochs.setdefault(epoch, Counter()).update(ids)
    return epochs


def _validation_passes(logs: list[ProbeLog]) -> dict[int, list[int]]:
    """Rank 0's validation samples per validation pass, keyed by the global step it ran after."""
    passes: dict[int, list[int]] = {}
    for global_step, _, ids in logs[0].valid:
        passes.setdefault(global_step, []).extend(ids)
    return passes
