"""How well a model retrieves: metrics (Prec@K, mAP@K, collapse), scoring any model that embeds
texts and photos (scoring), choosing rounds and hyperparameters on validation classes
(selection), and the linear baselines ZSCRGAN is compared with (baselines).

May import: the shared top-level modules, core and data.
"""
