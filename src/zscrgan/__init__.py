"""ZSCRGAN: zero-shot retrieval of images from textual descriptions (Roy et al., CIKM 2020).

The package, by subsystem; each may import only those listed before it (tests/test_layers.py):

    errors, console, files, runfiles, device,       the shared ground: error types, terminal output,
    flags, recipes, config                          atomic files and locks, a run folder's file names,
                                                    the recipes, the Config dataclass
    core/         the model: networks, losses, optimisers, the batch sampler, checkpoints
    data/         data sets on disk, photos and the encoders that turn photos and texts into vectors
    runs          a run folder read back: its data set, checkpoint and query embedder
    evaluation/   metrics, scoring any text->photo model, selection on validation classes, baselines
    experiments/  training runs (the EM trainer, run folders), compare, tune, reports
    search/       a trained model as a photo search: index, query, serve, shards
    cli           the `zscrgan` command: one subcommand per job, each owned by one module
"""
__version__ = "0.2.0"
