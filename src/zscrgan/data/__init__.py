"""Data sets and the vectors in them: upstream's pickle format read through a restricted
unpickler (dataset), the built-in demo set (synthetic), other formats (convert), photos on disk
and the encoders that turn photos and descriptions into vectors (photos, encoders, featurize),
the caption archives' layouts (captions) and the `zscrgan data` command (command).

May import: the shared top-level modules and core.
"""
