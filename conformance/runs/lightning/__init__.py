"""The Lightning backend: runs a recipe through lightning.Trainer (NeMo 2 refines it in conformance.runs.nemo)."""
