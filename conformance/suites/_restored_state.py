"""The exact gate of a resume: the state the resumed run starts training from must be bit-identical to the state
the run that wrote the checkpoint had when it saved it (its weights, every optimizer's tensors and param-group
settings, every LR scheduler's state, the tensors its callbacks hold), digest for digest. Where it is not, say which
state differs and how.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from conformance.training.recorder import RESTORED_CALLBACKS, RESTORED_STATE, SAVED_CALLBACKS
from conformance.training.recordstore import RecordStore
from conformance.training.state_digest import Path, describe_path, leaf_difference, leaves, state_digest

__all__ = ["GateOutcome", "restored_state_gate"]

#: Paths named per differing state before "and N more".
_NAMED = 3
#: What a resumed run configures when a component is on one side only, by the component's kind.
_OTHER_SET = {"callback": "other callbacks (by state_key)"}


@dataclass(frozen=True)
class GateOutcome:
    """What the gate found on one rank: its problems (empty: passed) and the digests it compared."""

    problems: list[str]
    #: The restored state's components (weights, optimizer i, LR scheduler i) with their sha256 digests.
    digests: dict[str, str]


def restored_state_gate(saving: RecordStore, resumed: RecordStore, stop_step: int) -> GateOutcome:
    """Hold the state ``resumed`` recorded as it started training against the state ``saving`` recorded after
    optimizer step ``stop_step``, when it saved the checkpoint the resumed run restored."""
    key = (stop_step,)
    started = resumed.keys(RESTORED_STATE)
    if key not in started:
        where = f"at global step {started[0][0]}" if started else "at global step 0 (or never trained)"
        return GateOutcome([(f"the resumed run started training {where}, not after optimizer step {stop_step}: the "
                            "loop state (global step) is not restored, so nothing it restored can be held against "
                            "the saved state")], {})
    missing = [stream for stream in ("saved_weights", "optimizer_state", "lr_scheduler_state")
               if key not in saving.keys(stream)]
    if missing:
        return GateOutcome([(f"the saving run recorded no {', '.join(missing)} at optimizer step {stop_step}: the "
                            "state it saved is unknown, so the restored state cannot be judged")], {})
    restored = resumed.read(RESTORED_STATE, key)
    saved = {"weights": saving.read("saved_weights", key), "optimizers": saving.read("optimizer_state", key),
             "lr_schedulers": saving.read("lr_scheduler_state", key)}
    if key in saving.keys(SAVED_CALLBACKS) and key in resumed.keys(RESTORED_CALLBACKS):
        saved["callbacks"] = saving.read(SAVED_CALLBACKS, key)
        restored = {**restored, "callbacks": resumed.read(RESTORED_CALLBACKS, key)}
    if not any(True for _ in leaves(saved["weights"])):
        return GateOutcome(["the saving run's weights hold nothing: there is no state to compare"], {})
    problems, digests = [], {}
    for component, saved_part, restored_part, names in _components(saved, restored):
        digests[component] = state_digest(restored_part)
        if digests[component] != state_digest(saved_part):
            problems += _describe(component, saved_part, restored_part, names)
    return GateOutcome(problems, digests)


def _components(saved: dict[str, Any], restored: dict[str, Any]) -> Iterator[tuple[str, Any, Any, Sequence[str]]]:
    """(component, saved, restored, parameter names) for the weights and each optimizer and LR scheduler."""
    yield "weights", saved["weights"], restored["weights"], ()
    names = restored["parameter_names"]
    for kind, label in (("optimizers", "optimizer"), ("lr_schedulers", "LR scheduler")):
        saved_list, restored_list = saved[kind], restored[kind]
        for index in range(max(len(saved_list), len(restored_list))):
            yield (f"{label} {index}", saved_list[index] if index < len(saved_list) else None,
                   restored_list[index] if index < len(restored_list) else None,
                   names[index] if kind == "optimizers" and index < len(names) else ())
    saved_callbacks, restored_callbacks = saved.get("callbacks", {}), restored.get("callbacks", {})
    for state_key in [*saved_callbacks, *(key for key in restored_callbacks if key not in saved_callbacks)]:
        yield (f"callback {state_key}", saved_callbacks.get(state_key), restored_callbacks.get(state_key), ())


def _describe(component: str, saved: Any, restored: Any, names: Sequence[str]) -> list[str]:
    """What differs in one component, grouped: one line per (field, kind of difference), naming a few paths."""
    if saved is None or restored is None:
        return [(f"{component}: {'the saving run had none' if saved is None else 'the resumed run has none'}: the "
                 f"resumed run configures {_OTHER_SET.get(component.split()[0], 'another number of them')}")]
    saved_leaves, restored_leaves = dict(leaves(saved)), dict(leaves(restored))
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for path in [*saved_leaves, *(path for path in restored_leaves if path not in saved_leaves)]:
        if path not in restored_leaves:
            difference = "is missing (not restored)"
        elif path not in saved_leaves:
            difference = "is not in the saved state"
        else:
            difference = leaf_difference(saved_leaves[path], restored_leaves[path]) or ""
        if difference:
            field, subject = _field_and_subject(path, names)
            groups.setdefault((field, difference.partition(" (")[0]), []).append((subject, difference))
    lines = [_group_line(component, field, entries) for (field, _), entries in groups.items()]
    if lines and component.startswith("callback "):
        lines[-1] += (" (a callback's tensors must come back from the checkpoint: give the callback state_dict() "
                      "and load_state_dict() returning and restoring them)")
    return lines


def _field_and_subject(path: Path, names: Sequence[str]) -> tuple[str, str]:
    """An optimizer state's path as (its field, the parameter's name); a param group's as (setting, group)."""
    if len(path) >= 3 and path[0] == "state" and isinstance(path[1], int):
        name = names[path[1]] if path[1] < len(names) else f"#{path[1]}"
        return describe_path(path[2:]), f"parameter `{name}`"
    if len(path) >= 3 and path[0] == "param_groups":
        return describe_path(path[2:]), f"param group {path[1]}"
    return "", f"`{describe_path(path)}`"


def _group_line(component: str, field: str, entries: list[tuple[str, str]]) -> str:
    (subject, difference), others = entries[0], [subject for subject, _ in entries[1:]]
    line = f"{component}: {f'`{field}` of ' if field else ''}{subject} {difference}"
    if others:
        more = f" and {len(others) - _NAMED} more" if len(others) > _NAMED else ""
        line += f"; likewise {', '.join(others[:_NAMED])}{more}"
    return line
