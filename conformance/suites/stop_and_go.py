"""StopAndGoConformance: resumed training must equal uninterrupted training, step by step, rank by rank.

The oracle is the checkpoint's own trajectory. The *reference* run trains ``num_steps`` optimizer steps, writes a
checkpoint after step ``stop_step`` (in ``on_train_batch_end``, where ``ModelCheckpoint`` saves) and trains on;
the *resumed* run restores that very checkpoint into a fresh model, data module and trainer, by default in a fresh
process as after a real preemption, and must match the reference from there on. Two trainings per class, and the
verdict does not rest on two processes initialising identically. With ``interruption`` set, a third run saves
after ``stop_step`` and then stops cleanly, crashes or is killed; the resumed run restores *its* checkpoint, which
proves that the files on disk are complete without an orderly shutdown. Each run is seeded identically and built
afresh from the recipe's hooks; a recipe whose ``trainer_kwargs()`` asks for several devices runs each run as that
many rank processes launched by the kit (DDP over gloo on CPU, NCCL on GPU). Every check compares one recorded fact
of the resumed run with the reference, on every rank; the kit adds recording callbacks only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, NoReturn

import torch

from conformance._text import indent
from conformance.compare import ComparisonResult, compare
from conformance.errors import ConformanceSetupError
from conformance.runs.backend import Backend, CheckpointUnreadable, FitPlan, RunOutcome
from conformance.runs.backends import backend_for
from conformance.runs.processes import importable_name
from conformance.sample_ids import SampleIdError, default_sample_ids
from conformance.suites._assertions import NOT_APPLICABLE, run_failures
from conformance.suites._base import ConformanceSuite
from conformance.suites._conditions import run_conditions
from conformance.suites._consumed_count import Miscount, first_miscount
from conformance.suites._diagnosis import Divergence, root_cause
from conformance.suites._elastic import elastic_problems, global_steps
from conformance.suites._reproducibility import reproducibility_diagnosis
from conformance.suites._restored_state import GateOutcome, restored_state_gate
from conformance.suites._trajectory import AFTER, MISCOUNTED, RankedComparison, compare_stream, describe_key
from conformance.tolerance_profiles import COMPUTED_CHECKS, TOLERANCE_PROFILES
from conformance.training.recorder import RNG_DRAWN
from conformance.training.recordstore import Key, RecordStore
from conformance.training.streams import CAUSAL_ORDER
from conformance.training.streams import stream as declared_stream

__all__ = ["StopAndGoConformance"]

#: The remedy when the first diverging training batch holds the same samples with other values.
_FETCH_TIME_RANDOMNESS = (
    "the batch holds the samples the reference run trained on there (the same sample ids) with other values, while "
    "the data position and the random state of the training step agree: randomness drawn as a batch is fetched or "
    "moved to the device (a dataset's __getitem__ in the main process, a collate_fn, a batch-transfer hook) comes "
    "before the random state is restored for the first resumed step (RNGStateCallback restores it in "
    "on_train_batch_start), and loaders fetch a batch ahead, so no checkpoint reproduces it; derive that "
    "randomness from (seed, sample index), or draw it in the training step"
)


def has_content(value: Any) -> bool:
    """Whether a record holds anything to compare: a non-empty tensor or a plain value somewhere inside it."""
    if value is None:
        return False
    if isinstance(value, torch.Tensor):
        return value.numel() > 0
    if isinstance(value, Mapping):
        return any(has_content(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_content(item) for item in value)
    return True


class StopAndGoConformance(ConformanceSuite, suite=True):
    """Mixin certifying that a training recipe (Lightning, a loop the kit drives, the Hugging Face Trainer or an
    attached trainer of its own) resumes from a mid-training checkpoint exactly."""

    #: Optimizer steps of the reference run (and where the resumed run ends).
    num_steps: ClassVar[int] = 8
    #: The checkpoint the resumed run restores is written after this optimizer step.
    stop_step: ClassVar[int] = 4
    #: None: the reference run writes the checkpoint and trains on (the shared trajectory, two trainings). Otherwise a
    #: third run writes it and then dies: "crash" raises an exception, "clean" stops the trainer, "kill" has every
    #: rank process killed by SIGKILL (needs ``resume_in_fresh_process``); the resumed run restores that checkpoint.
    interruption: ClassVar[Literal["clean", "crash", "kill"] | None] = None
    #: Run every run in fresh processes, so the resumed run starts with nothing in memory from the one that saved
    #: (module-level state, caches), as after a real preemption. Runs on several devices always do.
    resume_in_fresh_process: ClassVar[bool] = True
    #: Rank processes per run of a loop the kit drives (``make_training_state``; the kit joins them in a
    #: torch.distributed process group) or of an attached trainer (``run_training``; they get torchelastic-style
    #: variables to join one); a Lightning recipe's come from ``trainer_kwargs()``'s devices.
    num_ranks: ClassVar[int] = 1
    #: Seconds a multi-process run may take before the kit kills its ranks and fails it.
    process_deadline_s: ClassVar[float] = 600.0
    #: World sizes the restored checkpoint also resumes on (the global batch fixed), each checked by
    #: ``test_elastic_resume``; empty: the recipe declares no elastic resume and the check is skipped.
    elastic_resume_world_sizes: ClassVar[tuple[int, ...]] = ()

    #: Validate after every this many optimizer steps, so the validation checks have passes to compare after the
    #: resume; applied unless ``trainer_kwargs()`` sets ``val_check_interval`` or ``check_val_every_n_epoch``
    #: (then the recipe's own schedule holds). None: never impose one. An attached trainer validates on its own
    #: schedule; this setting does not reach it.
    validate_every_n_steps: ClassVar[int | None] = 2

    #: Trainer arguments a Lightning recipe's fits set themselves (run length, callbacks, logging folder).
    owned_trainer_kwargs: ClassVar[frozenset[str]] = frozenset({"max_steps", "max_epochs", "callbacks",
                                                                "default_root_dir"})
    #: How closely computed values must match along the trajectory, by name (see
    #: :mod:`conformance.tolerance_profiles`): "strict" (bit-exact) on CPUs and deterministic GPUs, "gpu_fp32" or
    #: "gpu_bf16" where kernels are nondeterministic. State, inputs and the exact gate stay exact under every one.
    tolerance_profile: ClassVar[str] = "strict"
    #: Train every run in deterministic mode (:func:`conformance.enable_deterministic_mode`), switched on before
    #: the recipe builds anything; the report says whether the runs trained with it on either way.
    deterministic_mode: ClassVar[bool] = False
    #: An elastic resume reduces gradients in another order (and draws other random numbers): losses agree only
    #: closely; adopters with dropout set their own tolerance. No profile applies to it.
    default_tolerances: ClassVar[dict[str, dict[str, float]]] = {"test_elastic_resume": {"atol": 1e-5, "rtol": 1e-4}}

    #: Each run, one outcome per rank (``interrupted`` is empty without an ``interruption``).
    reference: ClassVar[list[RunOutcome]]
    interrupted: ClassVar[list[RunOutcome]]
    resumed: ClassVar[list[RunOutcome]]
    #: The elastic resumes, by world size.
    elastic: ClassVar[dict[int, list[RunOutcome]]]
    _comparisons: ClassVar[dict[str, RankedComparison]]
    _final_weights: ClassVar[list[ComparisonResult] | None]
    _gates: ClassVar[list[GateOutcome] | None] = None
    #: The reproducibility diagnosis, once a check asked for it (see :meth:`_after_restore_diagnosis`).
    _reproducibility: ClassVar[str | None] = None
    #: The reference run's count against the samples it trained on: its first miscount, or why it cannot be counted
    #: (see :meth:`_miscount`).
    _count_check: ClassVar[tuple[Miscount | None, str | None] | None] = None

    @classmethod
    def settings_problems(cls) -> list[str]:
        problems = []
        if not isinstance(cls.num_steps, int) or cls.num_steps < 2:
            problems.append(f"num_steps must be an int >= 2, got {cls.num_steps!r}")
        elif not isinstance(cls.stop_step, int) or not 1 <= cls.stop_step < cls.num_steps:
            problems.append(f"stop_step must be an int with 1 <= stop_step < num_steps = {cls.num_steps}, got "
                            f"{cls.stop_step!r}: the checkpoint must come after at least one step and before the "
                            "end")
        if cls.interruption not in (None, "clean", "crash", "kill"):
            problems.append(f"interruption must be None, 'clean', 'crash' or 'kill', got {cls.interruption!r}")
        elif cls.interruption == "kill" and cls.runs_in_process():
            problems.append("interruption = 'kill' kills the interrupted run's process, so it needs "
                            "resume_in_fresh_process = True")
        try:
            problems += cls._elastic_problems(cls.world_size())
        except ConformanceSetupError as exc:
            problems.append(str(exc))
        if not cls.runs_in_process():
            try:
                importable_name(cls, owner_of="")
            except ConformanceSetupError as exc:
                problems.append(f"{exc} (or set resume_in_fresh_process = False to run a one-device recipe in this "
                                "process)")
        if cls.tolerance_profile not in TOLERANCE_PROFILES:
            problems.append(f"tolerance_profile must be one of {', '.join(map(repr, TOLERANCE_PROFILES))}, got "
                            f"{cls.tolerance_profile!r}")
        if not isinstance(cls.deterministic_mode, bool):
            problems.append(f"deterministic_mode must be True or False, got {cls.deterministic_mode!r}")
        every = cls.validate_every_n_steps
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            problems.append(f"validate_every_n_steps must be None or an int >= 1, got {every!r}")
        return problems

    # --- hooks with defaults -------------------------------------------------------------------------------
    @classmethod
    def sample_ids(cls, batch: Any) -> list[int]:
        """The dataset indices of a training batch's samples (for ``test_elastic_resume``); default: its
        ``idx``/``index``/... entry."""
        return default_sample_ids(batch)

    @classmethod
    def elastic_trainer_kwargs(cls, world_size: int) -> dict[str, Any]:
        """``trainer_kwargs()`` for resuming on ``world_size`` ranks with the same global batch: ``devices`` changed,
        ``accumulate_grad_batches`` (and a ``val_check_interval`` counted in batches) scaled. Override it when the
        recipe needs more to change."""
        kwargs = dict(cls.trainer_kwargs())
        accumulation = kwargs.get("accumulate_grad_batches", 1)
        scaled, remainder = divmod(accumulation * cls.world_size(), world_size)
        if remainder or scaled < 1:
            raise ConformanceSetupError(
                f"{cls.__qualname__}: {cls.world_size()} rank(s) x accumulate_grad_batches={accumulation} micro-batches "
                f"per step cannot be split over {world_size} rank(s); drop {world_size} from "
                "elastic_resume_world_sizes or override elastic_trainer_kwargs(world_size)")
        kwargs.update(devices=world_size, accumulate_grad_batches=scaled)
        interval = kwargs.get("val_check_interval")
        if isinstance(interval, int) and not isinstance(interval, bool):
            kwargs["val_check_interval"] = max(1, interval * scaled // accumulation)
        return kwargs

    @classmethod
    def suite_tolerances(cls, check: str, *, first_step: bool = False) -> Mapping[str, Any]:
        """The tolerance profile's settings for a check compared along the trajectory; ``default_tolerances`` for
        the others."""
        if check.removeprefix("test_") in CAUSAL_ORDER:
            return TOLERANCE_PROFILES[cls.tolerance_profile].settings(check, first_step=first_step)
        return super().suite_tolerances(check, first_step=first_step)

    # --- set-up --------------------------------------------------------------------------------------------
    @classmethod
    def recipe_problems(cls) -> list[str]:
        problems = super().recipe_problems()
        return problems or cls.backend().fit_problems(cls)

    @classmethod
    def backend(cls) -> Backend:
        """The backend that trains this class's recipe, chosen from the hooks it defines."""
        return backend_for(cls)

    @classmethod
    def hooks_required(cls) -> tuple[str, ...]:
        """The hooks of the class's backend: ``make_model`` and ``make_datamodule`` for Lightning,
        ``make_training_state`` and ``train_step`` for a loop the kit drives."""
        return cls.backend().required_hooks

    @classmethod
    def world_size(cls) -> int:
        """Rank processes per run (Lightning: the devices ``trainer_kwargs()`` asks for)."""
        return cls.backend().world_size(cls)

    @classmethod
    def runs_in_process(cls) -> bool:
        """Whether the runs happen in this process (see the backend's rule; never with ``resume_in_fresh_process``
        on, several ranks or an elastic resume)."""
        try:
            return cls.backend().runs_in_process(cls)
        except ConformanceSetupError:
            return True

    @classmethod
    def _elastic_problems(cls, world_size: int) -> list[str]:
        sizes = cls.elastic_resume_world_sizes
        if not isinstance(sizes, tuple) or not all(isinstance(size, int) and size >= 1 for size in sizes):
            return [f"elastic_resume_world_sizes must be a tuple of positive ints, got {sizes!r}"]
        if world_size in sizes:
            return [f"elastic_resume_world_sizes lists {world_size}, the recipe's own world size: list only other ones"]
        for size in sizes:
            cls.elastic_trainer_kwargs(size)  # raises when the global batch cannot be kept
        return []

    @classmethod
    def validation_schedule(cls, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Trainer arguments that validate every ``validate_every_n_steps`` optimizer steps, across epochs, unless
        the recipe (``kwargs``, default ``trainer_kwargs()``) schedules validation itself."""
        kwargs = cls.trainer_kwargs() if kwargs is None else kwargs
        if cls.validate_every_n_steps is None or {"val_check_interval", "check_val_every_n_epoch"} & set(kwargs):
            return {}
        batches_per_step = kwargs.get("accumulate_grad_batches", 1)
        return {"val_check_interval": cls.validate_every_n_steps * batches_per_step, "check_val_every_n_epoch": None}

    @classmethod
    def prepare(cls) -> None:
        """Train the reference run (and the interrupted run, with an ``interruption``), then the resumed run and any
        elastic resumes from the checkpoint they restore."""
        cls._comparisons, cls._final_weights, cls._gates, cls._reproducibility = {}, None, None, None
        cls._count_check = None
        cls.run_conditions = run_conditions(cls.tolerance_profile, [])
        plan, run = cls._plan, cls._run
        cls._checkpoint_path("reference").parent.mkdir(parents=True, exist_ok=True)
        plans = [plan("reference", stop_step=cls.stop_step, checkpoint=str(cls._checkpoint_path("reference")))]
        if cls.interruption is not None:
            plans.append(plan("interrupted", stop_step=cls.stop_step, interruption=cls.interruption,
                              checkpoint=str(cls._checkpoint_path("interrupted")), shares_records_with="reference"))
        cls.reference, *interrupted = run(plans)
        cls.interrupted = interrupted[0] if interrupted else []
        sizes = cls.elastic_resume_world_sizes
        saved = cls._restored_checkpoint()
        if saved is not None:
            cls.resumed, *elastic = run([plan("resumed", resume_from=str(saved), shares_records_with="reference")] + [
                plan(f"elastic{size}", resume_from=str(saved), world_size=size,
                     trainer_defaults=cls.validation_schedule(cls.elastic_trainer_kwargs(size))) for size in sizes])
            cls.elastic = dict(zip(sizes, elastic))
        else:
            cls.resumed = cls._not_started("resumed", len(cls.reference))
            cls.elastic = {size: cls._not_started(f"elastic{size}", size) for size in sizes}
        cls.run_conditions = run_conditions(cls.tolerance_profile, [
            outcome.records for outcome in (*cls.reference, *cls.interrupted, *cls.resumed)])

    @classmethod
    def _plan(cls, name: str, **settings: Any) -> FitPlan:
        """The plan of run ``name`` of this class: seeded, ``num_steps`` long, validating on its schedule."""
        return FitPlan(**{"name": name, "work_dir": str(cls._work_dir), "max_steps": cls.num_steps, "seed": cls.seed,
                          "trainer_defaults": cls.validation_schedule(),
                          "validate_every_n_steps": cls.validate_every_n_steps,
                          "deterministic": cls.deterministic_mode, **settings})

    @classmethod
    def _run(cls, plans: list[FitPlan]) -> list[list[RunOutcome]]:
        """Train ``plans`` one after the other with the class's backend; each one's outcome per rank."""
        return cls.backend().run_fits(cls, plans, in_process=cls.runs_in_process(), deadline_s=cls.process_deadline_s)

    @classmethod
    def _saving_run(cls) -> list[RunOutcome]:
        """The run whose checkpoint the resumed run restores: the interrupted run, else the reference."""
        return cls.interrupted or cls.reference

    @classmethod
    def _restored_checkpoint(cls) -> Path | None:
        """Where the checkpoint the resumed run restores was written, or None if the run saved nothing."""
        return cls.backend().saved_checkpoint(cls._checkpoint_path(cls._saving_run()[0].name))

    @classmethod
    def _checkpoint_path(cls, run: str) -> Path:
        """Where the kit asks run ``run`` to save its checkpoint (beside, not inside, the runs' own folders)."""
        return cls._work_dir / "checkpoints" / f"{run}.ckpt"

    @classmethod
    def _not_started(cls, name: str, ranks: int) -> list[RunOutcome]:
        error = (f"not started: the {cls._saving_run()[0].name} run left no checkpoint after optimizer step "
                 f"{cls.stop_step} (it never completed that step, or saved nothing where the kit asked)")
        return [RunOutcome(name, RecordStore(cls._work_dir / name / f"rank{rank}"), error, 0.0, rank)
                for rank in range(ranks)]

    # --- the checks ----------------------------------------------------------------------------------------
    def test_runs_trained(self) -> None:
        """Every run recorded optimizer steps and finite losses without failing, and the weights moved."""
        expected_steps = {
            "reference": (self.reference, 1, self.num_steps),
            "interrupted": (self.interrupted, 1, self.stop_step),
            "resumed": (self.resumed, self.stop_step + 1, self.num_steps),
        }
        problems = []
        for name, (ranks, first, last) in expected_steps.items():
            problems += run_failures(name, ranks)
            for run in ranks:
                if not run.records.keys("global_step"):
                    problems.append(f"{self._label(run)} recorded no optimizer step (expected steps {first}..{last})")
                if not all(_is_finite(loss) for _, loss in run.records.items("train_loss")):
                    problems.append(f"{self._label(run)} recorded a missing or non-finite training loss")
        for run in self.reference:
            final = run.records.keys("final_weights")
            if not final:
                problems.append(f"{self._label(run)} never reached the end of training (no final weights recorded)")
            elif compare(run.records.read("final_weights", final[-1]), run.records.read("initial_weights", (0,)),
                         atol=0, rtol=0).ok:
                problems.append(f"{self._label(run)}: the weights did not change, nothing was trained")
        ranks = f" on {len(self.reference)} ranks" if len(self.reference) > 1 else ""
        self.conclude(problems, f"all runs trained{ranks}")

    def test_restored_state(self) -> None:
        """The exact gate, before any tolerance: as its first training step starts, the resumed run holds bit for
        bit (sha256 over a canonical walk) the weights, optimizer and LR scheduler states that the run which wrote
        the checkpoint had when it saved it."""
        self._require_runs(self._saving_run()[0].name, "resumed")
        gates = self._restored_state_gates()
        problems = [f"{problem}{self._on(run)}" for run, gate in zip(self.resumed, gates) for problem in gate.problems]
        if problems:
            self._fail_with_cause(f"{self.check_name}: the state the resumed run starts from is not the state the "
                                  f"{self._saving_run()[0].name} run saved after optimizer step {self.stop_step}\n"
                                  + indent("\n".join(problems)))
        digests = gates[0].digests
        self.note_detail(None, f"{', '.join(digests)} restored bit-exact on {len(gates)} rank(s) (sha256 of the "
                               f"weights {digests.get('weights', '')[:12]})")

    def test_global_step(self) -> None:
        """Global step and epoch after every optimizer step."""
        self._check_stream("global_step")

    def test_learning_rate(self) -> None:
        """Every param group's learning rate used by every optimizer step."""
        self._check_stream("learning_rate")

    def test_consumed_samples(self) -> None:
        """The data's consumed-samples count after every optimizer step: the resumed run's is the reference run's,
        and the reference run's is the number of samples it trained on."""
        self._check_stream("consumed_samples")
        miscount, uncounted = self._miscount()
        if miscount is not None:
            self._fail_with_cause(f"{self.check_name}: {miscount.describe()}")
        compared = type(self).check_details[self.check_name].summary
        self.note_detail(None, f"{compared}; " + (f"not checked against the samples trained ({uncounted})" if uncounted
                                                   else "the reference run's count is the samples it trained on"))

    def test_initial_consumed_samples(self) -> None:
        """Right after restoring, the data module reports the samples consumed by the steps before the stop."""
        self._require_runs()
        self._skip_if_not_applicable()
        for reference, resumed in zip(self.reference, self.resumed):
            expected = self._read_one(reference, "consumed_samples", (self.stop_step,))
            actual = self._read_one(resumed, "start", (self.stop_step,))["consumed_samples"]
            if expected is None or actual is None:
                self._no_consumed_samples()
            self.note_detail(None, f"resumed at {actual} consumed samples, expected {expected}")
            if actual != expected:
                self.fail_check(
                    f"after restoring the checkpoint of step {self.stop_step} the data module{self._on(resumed)} "
                    f"reports {actual} consumed samples; the reference run had consumed {expected} by then, so "
                    f"the resumed run {'replays' if actual < expected else 'skips'} data"
                )

    def test_optimizer_state(self) -> None:
        """Every optimizer's full state after every optimizer step."""
        self._check_stream("optimizer_state")

    def test_lr_scheduler_state(self) -> None:
        """Every LR scheduler's state after every optimizer step."""
        self._check_stream("lr_scheduler_state")

    def test_callback_state(self) -> None:
        """The tensors every recipe callback holds after every optimizer step (not applicable when none holds
        any, or the backend runs no callbacks)."""
        self._require_runs()
        records = self.reference[0].records
        if not any(has_content(value) for _, value in records.items("callback_state")):
            self.skipTest(f"{NOT_APPLICABLE}no callback of the recipe holds tensors after any optimizer step"
                          + ("" if records.keys("callback_state") else " (its backend runs no callbacks)"))
        self._check_stream("callback_state")

    def test_rng_state(self) -> None:
        """Python, numpy, torch CPU and CUDA RNG states as every training_step starts (after all batch-start hooks);
        a state no training step draws from is unused, and its difference a note, not a failure."""
        self._require_runs()
        if self._training_draws_randomness():
            self._check_stream("rng_state")
            return
        outcome = self._comparison("rng_state")
        if outcome.ok:
            self.note_detail(outcome.worst, f"{outcome.compared} records compared (no training step draws random "
                                            "numbers)")
            return
        first = outcome.first_divergence()
        where = f" from optimizer step {first[0][0] + 1}" if first is not None else ""
        self.note_detail(outcome.worst, f"not restored{where}, unused today: no training step of the reference run "
                                        "drew random numbers; restore it before adding dropout or any other "
                                        f"randomness ({self.backend().remedies().get('rng_state', 'see the README')})")

    def test_train_inputs(self) -> None:
        """Every training batch, in order."""
        self._check_stream("train_inputs")

    def test_train_outputs(self) -> None:
        """What the model's forward returned for every training batch."""
        self._check_stream("train_outputs")

    def test_train_loss(self) -> None:
        """The loss of every training batch."""
        self._check_stream("train_loss")

    def test_valid_inputs(self) -> None:
        """Every validation batch of every validation run after the resume point, in order."""
        self._check_stream("valid_inputs")

    def test_valid_outputs(self) -> None:
        """What the model's forward returned for every validation batch."""
        self._check_stream("valid_outputs")

    def test_valid_loss(self) -> None:
        """The loss of every validation batch."""
        self._check_stream("valid_loss")

    def test_final_weights(self) -> None:
        """The model's weights when training ends."""
        self._require_runs()
        key = (self.num_steps,)
        for reference in self.reference:
            if not has_content(self._read_one(reference, "final_weights", key)):
                self.fail_check(f"nothing to compare{self._on(reference)}: {self._hint('final_weights')}")
        results = self._final_weights_comparison()
        worst = max((result.worst for result in results if result.worst), key=lambda leaf: leaf.usage, default=None)
        self.note_detail(worst, f"{sum(result.leaves_compared for result in results)} tensors compared")
        for resumed, result in zip(self.resumed, results):
            if not result.ok:
                self._fail_with_cause(f"{self.check_name}: the resumed run ends with different weights"
                                      f"{self._on(resumed)} at {describe_key(key)}\n{indent(result.format(10))}")

    def test_elastic_resume(self) -> None:
        """Resumed on each of ``elastic_resume_world_sizes`` ranks, every later optimizer step trains on the same
        global samples and reaches the same mean loss as the reference run, within this check's tolerance."""
        if not self.elastic_resume_world_sizes:
            self.skipTest("the recipe declares no elastic resume; list the world sizes its checkpoints resume on in "
                          "elastic_resume_world_sizes to check it")
        self._require_runs("reference", "interrupted")
        try:
            expected = global_steps([run.records for run in self.reference], self.sample_ids, after=self.stop_step)
            problems = []
            for size, ranks in self.elastic.items():
                label = f"{len(self.reference)} -> {size} ranks"
                problems += run_failures(f"elastic ({label})", ranks) or elastic_problems(
                    label, expected, global_steps([run.records for run in ranks], self.sample_ids,
                                                  after=self.stop_step), self.comparison_options(self.check_name),
                    training_draws_randomness=self._training_draws_randomness())
        except SampleIdError as exc:
            self.fail_check(f"cannot tell which samples a training batch holds: {exc} (or override the classmethod "
                            "sample_ids(batch))")
        if not expected:
            self.fail_check(f"nothing to compare: the reference run recorded no step after {self.stop_step}")
        self.conclude(problems, f"{len(expected)} steps after the resume on "
                                f"{', '.join(map(str, self.elastic))} rank(s) match")

    def test_checkpoint_contents(self) -> None:
        """The checkpoint loads with weights_only=True and holds the state the resume needs, equal to the run's."""
        saving = self._saving_run()
        self._require_runs(saving[0].name)
        path = self._restored_checkpoint()
        if path is None:
            self.fail_check(f"the {saving[0].name} run wrote no checkpoint after step {self.stop_step}")
        self._skip_if_not_applicable()
        try:
            summary, problems = self.backend().checkpoint_problems(path, [rank.records for rank in saving],
                                                                   self.stop_step)
        except CheckpointUnreadable as exc:
            self.fail_check(str(exc))
        self.note_detail(None, summary)
        if problems:
            self.fail_check(f"the checkpoint after step {self.stop_step} is incomplete or wrong", problems)

    # --- helpers -------------------------------------------------------------------------------------------
    def _check_stream(self, stream: str) -> None:
        """Compare ``stream`` along the trajectory; fail closed if the reference run recorded nothing to compare."""
        self._require_runs()
        self._skip_if_not_applicable()
        resumed_from = self._resumed_from(stream)
        content = declared_stream(stream).content
        for reference in self.reference:  # every rank must have something, or its comparison passes on nothing
            after_resume = [key for key in reference.records.keys(stream) if key[0] >= resumed_from]
            if not after_resume or not has_content(content(reference.records.read(stream, after_resume[0]))):
                if stream == "consumed_samples":
                    self._no_consumed_samples()
                hint = self._hint(stream)
                self.fail_check(f"nothing to compare after the resume point (global step {resumed_from}) in the "
                                f"reference run{self._on(reference)}: {hint}")
        outcome = self._comparison(stream)
        self.note_detail(outcome.worst, f"{outcome.compared} records compared")
        if not outcome.ok:
            self._fail_with_cause(outcome.failure_message(self.check_name))

    def _hint(self, stream: str) -> str:
        """Why a run may have recorded nothing in ``stream``, in the backend's terms."""
        return self.backend().hints().get(stream, declared_stream(stream).hint)

    def _no_consumed_samples(self) -> NoReturn:
        """The data reports no consumed-samples count: not applicable, with the backend's reason (the data position
        is then judged by test_train_inputs)."""
        self.skipTest(f"{NOT_APPLICABLE}{self.backend().unreported_consumed_samples}")

    def _resumed_from(self, stream: str) -> int:
        """The first key (global step) of ``stream`` that the resumed run is responsible for."""
        return self.stop_step if declared_stream(stream).per_micro_batch else self.stop_step + 1

    def _comparison(self, stream: str) -> RankedComparison:
        """``stream`` compared along the trajectory, once per class (see :meth:`_stop_step_validation`)."""
        cls = type(self)
        if stream not in cls._comparisons:
            several = len(self.reference) > 1
            comparisons = []
            for index, (reference, resumed) in enumerate(zip(self.reference, self.resumed)):
                interrupted = self.interrupted[index].records if self.interrupted else None
                lost, extra = self._stop_step_validation(stream, interrupted)
                comparisons.append(compare_stream(
                    stream, reference.records, resumed.records, interrupted=interrupted,
                    owned_by_resumed=self._owned_by_resumed(stream), options=self._options_by_key(stream),
                    may_be_lost=lost, may_be_extra=extra, rank=reference.rank if several else None))
            cls._comparisons[stream] = RankedComparison(comparisons)
        return cls._comparisons[stream]

    def _options_by_key(self, stream: str) -> Callable[[Key], dict[str, Any]]:
        """The comparison options of each record of ``stream``: the first resumed step's envelope for the records
        the first resumed optimizer step computes (from the bit-identical restored state), the later steps' else."""
        check = f"test_{stream}"
        first, later = (self.comparison_options(check, first_step=True), self.comparison_options(check))
        keying = declared_stream(stream).keying
        resumed_step = self.stop_step + 1

        def options(key: Key) -> dict[str, Any]:
            if keying == "micro_batch":
                is_first = key[0] == self.stop_step
            elif keying == "validation":
                is_first = key[0] in (self.stop_step, resumed_step)
            else:
                is_first = key[0] == resumed_step
            return first if is_first else later

        return options

    def _owned_by_resumed(self, stream: str) -> Callable[[Key], bool]:
        """Whether a record of ``stream`` is the resumed run's to make (from the resume point on)."""
        first = self.stop_step if declared_stream(stream).keying in ("micro_batch", "validation") else self.stop_step + 1
        return lambda key: key[0] >= first

    def _stop_step_validation(self, stream: str, interrupted: RecordStore | None
                              ) -> tuple[Callable[[Key], bool], Callable[[Key], bool]]:
        """Which validation records at the stop step the interruption excuses: (may be missing, may be extra).

        A validation due right after the stop step may be lost to the interruption, batch by batch: Lightning 2.4
        replays it on resume with its first batch only, whatever the recipe does. A clean stop makes Lightning
        validate once more in the interrupted run (it validates when a run stops), so that run's validation at the
        stop step may be one the reference run does not have.
        """
        if not stream.startswith("valid_"):
            return (lambda key: False), (lambda key: False)
        interrupted_keys = set() if interrupted is None else set(interrupted.keys(stream))

        def lost(key: Key) -> bool:
            return key[0] == self.stop_step

        def extra(key: Key) -> bool:
            return self.interruption == "clean" and key[0] == self.stop_step and key in interrupted_keys

        return lost, extra

    def _final_weights_comparison(self) -> list[ComparisonResult]:
        """The final weights of each rank of the resumed run compared with the same rank's of the reference run."""
        cls = type(self)
        if cls._final_weights is None:
            key = (self.num_steps,)
            cls._final_weights = [compare(self._read_one(resumed, "final_weights", key),
                                          self._read_one(reference, "final_weights", key),
                                          **self.comparison_options(
                                              "test_final_weights", first_step=self.num_steps == self.stop_step + 1))
                                  for reference, resumed in zip(self.reference, self.resumed)]
        return cls._final_weights

    def _restored_state_gates(self) -> list[GateOutcome]:
        """The exact gate on every rank, once per class."""
        cls = type(self)
        if cls._gates is None:
            cls._gates = [restored_state_gate(saving.records, resumed.records, self.stop_step)
                          for saving, resumed in zip(self._saving_run(), self.resumed)]
        return cls._gates

    def _root_cause(self) -> Divergence | None:
        """The earliest divergence over every recorded stream, a consumed-samples count that is not the samples
        trained included (the runs succeeded: the check failing asked)."""
        several = len(self.resumed) > 1
        divergences = [Divergence("restored_state", (self.stop_step,), AFTER, run.rank if several else None)
                       for run, gate in zip(self.resumed, self._restored_state_gates()) if gate.problems]
        miscount = self._miscount()[0]
        if miscount is not None:
            divergences.append(Divergence("consumed_samples", (miscount.step,), MISCOUNTED, miscount.rank))
        unused = {"restored_state"} | (set() if self._training_draws_randomness() else {"rng_state"})
        for stream in (stream for stream in CAUSAL_ORDER[:-1] if stream not in unused):
            recorded = self.reference[0].records.keys(stream)
            first = self._comparison(stream).first_divergence() if recorded else None
            if first is not None:
                divergences.append(Divergence(stream, *first))
        final = (self.num_steps,)
        recorded = all(final in run.records.keys("final_weights") for run in (*self.reference, *self.resumed))
        if recorded:
            divergences += [Divergence("final_weights", final, AFTER, run.rank if several else None)
                            for run, result in zip(self.resumed, self._final_weights_comparison()) if not result.ok]
        return root_cause(divergences)

    def _remedies(self, root: Divergence) -> dict[str, str]:
        """What to do about each stream's divergence: the backend's remedies; for the restored state the gate's
        first finding; for a computed value that first diverges after an exactly restored state, what a second
        uninterrupted run tells (see :meth:`_after_restore_diagnosis`)."""
        first = next((problem for gate in self._restored_state_gates() for problem in gate.problems), None)
        remedies = dict(self.backend().remedies())
        miscount = self._miscount()[0]
        if miscount is not None:
            remedies["consumed_samples"] = (f"{miscount.describe()}; count the micro-batches trained, not the "
                                            "optimizer steps (under manual optimization Lightning's global_step "
                                            "counts every optimizer.step())")
        if first is not None:
            remedies["restored_state"] = f"{declared_stream('restored_state').remedy}: {first.partition('; likewise')[0]}"
        elif root.check in COMPUTED_CHECKS and root.segment == AFTER:
            remedies[root.stream] = self._after_restore_diagnosis()
        elif root.stream == "train_inputs" and root.segment == AFTER and self._same_samples(root):
            remedies["train_inputs"] = _FETCH_TIME_RANDOMNESS
        return remedies

    def _same_samples(self, divergence: Divergence) -> bool:
        """Whether the diverging training batch holds the same sample ids in both runs (its values differ): the
        data position agrees; False when a run lacks the batch or the batches carry no sample ids."""
        rank = divergence.rank or 0
        runs = (self.reference[rank].records, self.resumed[rank].records)
        if any(divergence.key not in records.keys("train_inputs") for records in runs):
            return False
        try:
            expected, actual = (self.sample_ids(records.read("train_inputs", divergence.key)) for records in runs)
        except SampleIdError:
            return False
        return expected == actual

    def _miscount(self) -> tuple[Miscount | None, str | None]:
        """The reference run's first step whose consumed-samples count is not the samples it trained on, and why it
        cannot be counted when its batches carry no sample ids; once per class."""
        cls = type(self)
        if cls._count_check is None:
            try:
                cls._count_check = (first_miscount([run.records for run in self.reference], self.sample_ids), None)
            except SampleIdError as exc:
                cls._count_check = (None, f"sample_ids(batch) finds none: {exc}")
        return cls._count_check

    def _after_restore_diagnosis(self) -> str:
        """Why a computed value differs although the resumed run started from the saved state bit for bit: a second
        uninterrupted run, trained once per class when first asked, tells whether the recipe repeats itself at all
        (reproducibility is a diagnosis here, never the verdict)."""
        cls = type(self)
        if cls._reproducibility is None:
            [repeat] = cls._run([cls._plan("repeat", shares_records_with="reference")])
            cls._reproducibility = reproducibility_diagnosis(
                [run.records for run in self.reference], [run.records for run in repeat], run_failures("repeat", repeat))
        return cls._reproducibility

    def _training_draws_randomness(self) -> bool:
        """Whether a training step of the reference run drew random numbers on any rank (True where the run
        recorded no such evidence: the random state is then judged as if it were used)."""
        evidence = [[run.records.read(RNG_DRAWN, key) for key in run.records.keys(RNG_DRAWN)]
                    for run in self.reference]
        return not all(evidence) or any(any(drawn) for drawn in evidence)

    def _fail_with_cause(self, message: str) -> NoReturn:
        """Fail with ``message``, saying right below its first line what the root cause of the class's failures is
        and whether this check is where it shows first."""
        root = self._root_cause()
        if root is None:
            self.raise_failure(message.splitlines())
        is_root = root.check == self.check_name
        described = root.describe(self._remedies(root))
        self.note_cause(described, is_root=is_root)
        cause = (f"  root cause: this is the earliest divergence of all streams; {described}" if is_root
                 else f"  a consequence of the root cause: {described}")
        headline, _, rest = message.partition("\n")
        self.raise_failure([part for part in (headline, cause, rest) if part])

    def _require_runs(self, *names: str) -> None:
        """Fail the check unless every rank of the named runs (default: all of them) succeeded."""
        for name in names or ("reference", "interrupted", "resumed"):
            self.require_succeeded(name, getattr(self, name))

    def _on(self, run: RunOutcome) -> str:
        """" on rank r" when the runs have several ranks, else nothing."""
        return f" on rank {run.rank}" if len(self.reference) > 1 else ""

    def _label(self, run: RunOutcome) -> str:
        return f"the {run.name} run{self._on(run)}"

    def _read_one(self, run: RunOutcome, stream: str, key: Key) -> Any:
        if key not in run.records.keys(stream):
            self.fail_check(f"the {run.name} run recorded no '{stream}' at {describe_key(key)}")
        return run.records.read(stream, key)


def _is_finite(loss: Any) -> bool:
    if isinstance(loss, torch.Tensor):
        return bool(torch.isfinite(loss).all())
    return isinstance(loss, (int, float)) and math.isfinite(loss)
