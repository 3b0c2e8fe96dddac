"""The reference data module under DataModuleResumeConformance (the class below is collected as a test)."""

from reference_models.certify import TestSyntheticDataModuleResume  # noqa: F401 - collected by unittest and pytest
