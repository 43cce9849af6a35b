"""Training and studying models: the EM trainer, the `train`/`evaluate` commands' run loop and
run folders, `compare` (baselines against recipes over seeds), `tune` (Optuna on validation
classes) and `report` (plots and a page per run).

May import: the shared top-level modules, core, data and evaluation (never search).
"""
