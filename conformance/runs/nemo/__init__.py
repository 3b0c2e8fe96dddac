"""NeMo 2 refinement of the Lightning backend: MegatronStrategy recipes, their probes and the CPU emulation."""
