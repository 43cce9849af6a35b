"""Upstream's entry point, kept so `python run_exp.py --dataset CUB ...` still works.

It is `zscrgan train` with the same flags (see README.md).
"""
import sys

from zscrgan.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
