"""The Hugging Face Trainer backend: recipes whose own Trainer runs the loop, observed through a callback and torch's
hooks (the attached mode)."""
