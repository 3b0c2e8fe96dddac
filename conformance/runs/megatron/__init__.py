"""What Megatron-core recipes need from the kit on CPU machines (its model-parallel RNG tracker)."""
