"""What backends share whose recipes say how many rank processes a run has (``num_ranks``, default 1) and run
one rank in the test process when the class allows it."""

from __future__ import annotations

__all__ = ["RankedBackend"]


class RankedBackend:
    """The ``num_ranks`` part of :class:`conformance.runs.backend.Backend`, for a backend to inherit."""

    def ranks_problems(self, recipe: type) -> list[str]:
        """The recipe's ``num_ranks`` problem, if any."""
        ranks = getattr(recipe, "num_ranks", 1)
        if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
            return [f"num_ranks must be an int >= 1 (rank processes per run), got {ranks!r}"]
        return []

    def fit_problems(self, recipe: type) -> list[str]:
        return []

    def world_size(self, recipe: type) -> int:
        return int(getattr(recipe, "num_ranks", 1))

    def environment_label(self, recipe: type) -> str | None:
        return None

    def runs_in_process(self, recipe: type) -> bool:
        return not recipe.resume_in_fresh_process and self.world_size(recipe) == 1
