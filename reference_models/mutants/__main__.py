"""``python -m reference_models.mutants``: run every mutant catalogue and print its kill table; exit 1 if one
survives."""

import importlib.util
import sys

from conformance import DataModuleResumeConformance, PredictionWriterConformance, StopAndGoConformance
from conformance.runs.hf_trainer.backend import transformers_problem
from reference_models.mutants import kill_table
from reference_models.mutants.attached_trainer import ATTACHED_MUTANTS
from reference_models.mutants.datamodule import DATAMODULE_MUTANTS
from reference_models.mutants.prediction import PREDICTION_MUTANTS
from reference_models.mutants.stateful_loader import LOADER_MUTANTS
from reference_models.mutants.stop_and_go import STOP_AND_GO_MUTANTS
from reference_models.mutants.torch_loop import LOOP_MUTANTS

table = "\n".join([kill_table(STOP_AND_GO_MUTANTS, StopAndGoConformance),
                   kill_table(LOOP_MUTANTS, StopAndGoConformance, coverage=False),  # the loop backend's supplement
                   kill_table(ATTACHED_MUTANTS, StopAndGoConformance, coverage=False),  # the attached backend's
                   kill_table(DATAMODULE_MUTANTS, DataModuleResumeConformance),
                   kill_table(LOADER_MUTANTS, DataModuleResumeConformance, coverage=False),  # the loader backend's
                   kill_table(PREDICTION_MUTANTS, PredictionWriterConformance)])
if importlib.util.find_spec("megatron") is not None:  # the tensor-parallel mutants need megatron-core
    from reference_models.mutants.megatron import MEGATRON_MUTANTS

    table += "\n" + "\n".join(
        kill_table(tuple(mutant for mutant in MEGATRON_MUTANTS if issubclass(mutant.conformance_class, suite)), suite,
                   coverage=False)  # a supplement to the suite's catalogue above
        for suite in (StopAndGoConformance, PredictionWriterConformance))
if importlib.util.find_spec("nemo") is not None:  # NeMo's MegatronStrategy, on its CPU emulation without CUDA
    from reference_models.mutants.nemo import NEMO_MUTANTS

    table += "\n" + kill_table(NEMO_MUTANTS, StopAndGoConformance, coverage=False)
if transformers_problem() is None:  # the Hugging Face Trainer backend needs transformers >= 5
    from reference_models.mutants.hf_trainer import HF_TRAINER_MUTANTS

    table += "\n" + kill_table(HF_TRAINER_MUTANTS, StopAndGoConformance, coverage=False)
print(table)
sys.exit(0 if "SURVIVED" not in table else 1)
