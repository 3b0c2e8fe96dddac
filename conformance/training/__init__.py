"""What training runs need to be recorded and to resume: per-step records on disk, RNG-state checkpointing, and
Megatron-style resumable data."""
