"""How a conformance run is driven: plain Lightning (CPU/GPU) now, NeMo's MegatronStrategy later."""
