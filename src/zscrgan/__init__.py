"""ZSCRGAN: zero-shot retrieval of images from textual descriptions (Roy et al., CIKM 2020)."""
__version__ = "0.1.0"
