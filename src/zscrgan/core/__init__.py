"""The model: ZSCRGAN's networks, its losses, its optimisers, the E-step's batch sampler, its
checkpoints read back and its embeddings in the common space (embedding: the one query embedder
that scoring, evaluate and search share). The step-for-step reference of upstream's update the trainer is tested
against is tests/reference.py (docs/algorithm.md).

Imports nothing from the other subpackages (only the shared top-level modules), so the model can
be read and tested alone.
"""
