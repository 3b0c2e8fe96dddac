"""The loop backend: training loops the kit drives itself from a recipe's parts (plain PyTorch, DCP checkpoints)."""
