"""Tiny reference recipes (GPT, BERT) on synthetic data, and deliberately broken variants of them ("mutants")."""
