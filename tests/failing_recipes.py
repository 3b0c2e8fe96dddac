"""A module of conformance classes that must fail, for the certify command's tests (not collected itself)."""

from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS

BrokenRNG = next(m for m in STOP_AND_GO_MUTANTS if m.name == "rng_not_restored").conformance_class
