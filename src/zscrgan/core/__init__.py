"""The model: ZSCRGAN's networks, its losses, its optimisers, the E-step's batch sampler, its
checkpoints read back, and a step-for-step reference of upstream's update (docs/algorithm.md).

Imports nothing from the other subpackages (only the shared top-level modules), so the model can
be read and tested alone.
"""
