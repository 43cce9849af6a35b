"""`zscrgan tune`: search hyperparameters with Optuna on held-out seen classes only.

    zscrgan tune --dataset FLO --epochs 12 --patience 4 --select_k 20 --trials 40 --jobs 2
    zscrgan train --config tune_FLO/best_config.json          # the best trial, unseen classes scored

Every ``zscrgan train`` flag sets the fixed base of every trial; a flag given on the command
line also takes its parameter out of the search space. Each trial is a ``--select val`` run in
``<study folder>/trial_<N>/``, scored by the validation Prec@K (``--select_k``) of its selected
round; every round reports that figure so the pruner can stop hopeless trials. The unseen
classes are never read: trials run with ``score_unseen=False``. A trial whose selected round
collapsed (every round did; the selector never prefers a collapsed round over a sound one)
scores 0: its figure is chance, not retrieval. A trial whose first round's loss went non-finite
is marked failed. The study lives in a journal file in the study folder (or ``--storage URL``),
so a rerun with the same ``--study`` continues it with every finished trial kept; trials left
RUNNING by a killed process on this machine are marked failed at the next start.
"""
from __future__ import annotations

import os
import re
import socket
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from zscrgan.config import PER_CALL, Config, flags_given, parse_config, run_name
from zscrgan.console import positive_int
from zscrgan.data.dataset import split_validation
from zscrgan.device import SPAWN, thread_share
from zscrgan.errors import DataError, UserError, require
from zscrgan.evaluation.selection import check_select_k
from zscrgan.experiments.run import Run, prepare_process, rounds_to_run
from zscrgan.experiments.tune_report import best_trial, write_study_report
from zscrgan.experiments.tune_space import STUDY_FREE, read_space, suggest
from zscrgan.files import write_json
from zscrgan.runs import load_run_data

# Left out of best_config.json, to each command's defaults (compare's --seeds 0,1,2, train's reports)
NOT_IN_BEST_CONFIG = PER_CALL | {"seeds", "workers", "report", "track_test"}


def _optuna():
    """Optuna (the tune extra), or a one-line UserError saying how to install it."""
    return require("optuna", "tune", "tuning")


def make_pruner(name: str, epochs: int):
    """median: below the median of earlier trials at the same round; hyperband: successive halving over rounds."""
    optuna = _optuna()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


# ---- storage and study -------------------------------------------------------------------------
# the pip package of each database driver module SQLAlchemy imports for a URL, where the names differ
DRIVER_PACKAGES = {"psycopg": "'zscrgan[postgres]'", "psycopg2": "psycopg2-binary", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient"}
SCHEMA_ATTEMPTS = 3


def open_storage(spec: str):
    """A URL (postgresql://, mysql+pymysql://, sqlite:///) -> RDB storage with heartbeats; else a journal file."""
    optuna = _optuna()
    if "://" not in spec:
        return optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(spec))
    check_driver(spec)
    database_errors = require("sqlalchemy.exc", "tune", "--storage")  # comes with optuna
    for attempt in range(SCHEMA_ATTEMPTS):
        try:  # heartbeats let workers on other machines fail the trials of a worker that died
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(spec, heartbeat_interval=60, grace_period=300)
        except Exception as exc:  # drivers, DNS, refused connections, bad URLs: many kinds
            # workers started together on a new database all create Optuna's tables, and all but one
            # collide (a duplicate key); a second look finds the tables made
            collided = isinstance(exc, (database_errors.IntegrityError, database_errors.ProgrammingError))
            if not collided or attempt == SCHEMA_ATTEMPTS - 1:
                raise DataError(f"--storage {hide_password(spec)}: cannot open ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
            time.sleep(1 + attempt)


def check_driver(spec: str) -> None:
    """The URL's database driver imports, or one line naming the package that installs it (SQLAlchemy
    2.1 reads a plain postgresql:// with psycopg 3, not psycopg2)."""
    try:
        url = require("sqlalchemy.engine", "tune", "--storage").make_url(spec)
        dialect = url.get_dialect()
    except Exception:  # a malformed URL or an unknown database: RDBStorage says which
        return
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        module = exc.name or dialect.driver
        raise UserError(f"--storage {hide_password(spec)}: the {url.drivername} driver needs {module}: "
                        f"pip install {DRIVER_PACKAGES.get(module, module)}") from None


def hide_password(url: str) -> str:
    try:
        make_url = require("sqlalchemy.engine", "tune", "--storage").make_url  # comes with optuna
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a journal path, or a URL SQLAlchemy cannot parse
        return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def fail_stale_trials(study) -> list[int]:
    """RUNNING trials of processes on this machine that no longer exist (kill -9) become FAIL."""
    TrialState = _optuna().trial.TrialState
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.user_attrs.get("host") == socket.gethostname() and not pid_alive(t.user_attrs.get("pid", -1)):
            # no public call fails another process's trial; heartbeats (RDB only) use this one
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            stale.append(t.number)
    return stale


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0) if pid > 0 else None  # no pid recorded: leave the trial alone
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        pass
    return True


# ---- one worker: trials in this process --------------------------------------------------------
def objective(trial, job: dict) -> float:
    optuna = _optuna()
    trial.set_user_attr("pid", os.getpid())
    trial.set_user_attr("host", socket.gethostname())
    params = suggest(trial, job["space"])
    run_dir = Path(job["study_dir"]) / f"trial_{trial.number:04d}"
    cfg = Config(**{**job["base"], **params, "out_dir": str(run_dir)}).resolved()
    run = Run(cfg)
    trial.set_user_attr("run_dir", str(run.run_dir))

    def on_round(record, selector):
        figure = 0.0 if record["collapsed"] else record["val"][f"prec@{selector.k}"]
        trial.report(figure, record["round"])
        if trial.should_prune():
            trial.set_user_attr("pruned_round", record["round"])
            raise optuna.TrialPruned(f"pruned at round {record['round']}")

    try:
        summary = run.train(on_round=on_round, score_unseen=False)
    except UserError as exc:  # a non-finite loss in the first round: nothing to select
        trial.set_user_attr("error", str(exc))
        raise
    trial.set_user_attr("selected_round", summary["selected_round"])
    trial.set_user_attr("collapsed", summary["selected_collapsed"])
    if summary.get("stopped"):
        trial.set_user_attr("stopped", summary["stopped"])
    return 0.0 if summary["selected_collapsed"] else float(run.selector.score)


def run_worker(job: dict, index: int, n_trials: int | None, threads: int) -> None:
    """study.optimize for this process's share of the trials (each job process runs one)."""
    optuna = _optuna()
    if threads:
        torch.set_num_threads(threads)
    prepare_process(Config(**job["base"]))
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the progress line below says it all
    seed = int(np.random.SeedSequence([job["base"]["seed"], index, job["start_trials"]]).generate_state(1)[0])
    study = optuna.load_study(study_name=job["study"], storage=open_storage(job["storage"]),
                              sampler=optuna.samplers.TPESampler(seed=seed),
                              pruner=make_pruner(job["pruner"], job["epochs"]))
    try:
        study.optimize(lambda trial: objective(trial, job), n_trials=n_trials, timeout=job["timeout"],
                       catch=(UserError,), callbacks=[lambda s, t: after_trial(s, t, job)])
    except KeyboardInterrupt:  # Optuna has marked the trial failed; the parent says "interrupted"
        if threads:  # a spawned process: exit quietly, no traceback
            raise SystemExit(130) from None
        raise


def after_trial(study, trial, job: dict) -> None:
    print(progress_line(study, trial, job["base"]["select_k"]), flush=True)
    write_best_config(study, job)


def progress_line(study, trial, k: int) -> str:
    """'trial 3: val prec@10 0.412 (pruned at round 2) {params}; best 0.450 (trial 1)'."""
    attrs, state = trial.user_attrs, trial.state.name
    params = "{" + ", ".join(f"{n}: {v:.3g}" if isinstance(v, float) else f"{n}: {v}"
                             for n, v in trial.params.items()) + "}"
    if state == "FAIL":
        head = f"failed ({attrs.get('error', 'see the error above')})"
    else:
        collapsed = ", collapsed: scored 0" if attrs.get("collapsed") else ""
        how = (f"pruned at round {attrs.get('pruned_round')}" if state == "PRUNED" else
               f"round {attrs.get('selected_round')} selected{collapsed}")
        head = f"val prec@{k} {trial.value:.3f} ({how})"
    best = best_trial(study)
    tail = f"best {best.value:.3f} (trial {best.number})" if best else "no completed trial yet"
    return f"trial {trial.number}: {head} {params}; {tail}"


def write_best_config(study, job: dict) -> Path | None:
    """best_config.json: the base settings with the best trial's parameters, for train/compare --config.

    Flags that say how to run rather than what to train are left to each command's defaults
    (:data:`NOT_IN_BEST_CONFIG`)."""
    best = best_trial(study)
    if best is None:
        return None
    settings = {k: v for k, v in {**job["base"], **best.params, "out_dir": job["out_dir"]}.items()
                if k not in NOT_IN_BEST_CONFIG}
    path = Path(job["study_dir"]) / "best_config.json"
    write_json(path, settings)
    return path


# ---- the command ---------------------------------------------------------------------------------
def parse(argv: list[str]) -> tuple[dict, dict, set[str]]:
    """The base settings of every trial, the tuning flags, and the Config flags the command line fixes."""
    def tuning_flags(parser):
        group = parser.add_argument_group("tuning")
        group.add_argument("--study", default="", help="study NAME (default: the data set's name)")
        group.add_argument("--storage", default="", help="an RDB URL (postgresql://, mysql+pymysql://, sqlite:///) "
                           "shared by workers on several machines; default: a journal file in the study folder")
        group.add_argument("--trials", type=positive_int, default=20, help="trials to run in this call (over all --jobs)")
        group.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
        group.add_argument("--jobs", type=positive_int, default=1, help="parallel trial processes, threads split between them")
        group.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
        group.add_argument("--space", default="", help="YAML or JSON file: flag -> range replacing the default "
                           "search space's entry (null removes it)")
        group.add_argument("--out", default="", help="study folder (default: <out_dir>/tune_<study>)")

    # allow_abbrev off: a flag fixes its parameter only when spelt out (flags_given)
    cfg, tune = parse_config(argv, "zscrgan tune", extra=tuning_flags, allow_abbrev=False,
                             description="Search hyperparameters with Optuna on validation classes "
                             "(unseen classes never read).")
    return asdict(cfg), vars(tune), flags_given(argv, "zscrgan tune")


def main(argv: list[str]) -> int:
    optuna = _optuna()
    values, tune, given = parse(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = {**values, "select": "val", "track_test": False, "report": False, "resume": False, "workers": 1}
    if values["seeds"]:  # parse_config has checked the settings; this is tune's own
        raise DataError("--seeds: a trial trains one seed (--seed); rerun the best config with --seeds")
    check_validation(Config(**base))
    space = {n: s for n, s in read_space(tune["space"], base).items() if n not in given}
    if not space:
        raise DataError("nothing to search: every parameter is fixed by a flag or removed by --space")
    study_name = tune["study"] or run_name(Config(**base))
    study_dir = Path(tune["out"] or Path(values["out_dir"]) / f"tune_{study_name}")
    storage = tune["storage"] or str(study_dir / "journal.log")
    epochs = rounds_to_run(Config(**base))

    if "://" not in storage:
        study_dir.mkdir(parents=True, exist_ok=True)  # every check has passed: now the folder may be made
    study = open_study(storage, study_name, base)
    study_dir.mkdir(parents=True, exist_ok=True)
    stale = fail_stale_trials(study)
    if stale:
        print(f"study {study_name}: trials {stale} were left running by a process that is gone; marked failed")
    job = dict(base=base, space=space, study=study_name, storage=storage, study_dir=str(study_dir), epochs=epochs,
               pruner=tune["pruner"], timeout=tune["timeout"], start_trials=len(study.trials),
               out_dir=values["out_dir"])
    print(f"study {study_name} in {hide_password(storage)}: {len(study.trials)} trials so far; searching "
          f"{', '.join(space)}; {tune['trials']} trials of up to {epochs} rounds, {tune['jobs']} at a time", flush=True)
    try:
        run_jobs(job, tune["trials"], tune["jobs"])
    finally:  # after Ctrl-C too: the finished trials' best config and page are worth keeping
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
        best = write_best_config(study, job)
        write_study_report(study, study_dir, base["select_k"])
    counts = {s: sum(t.state.name == s for t in study.trials) for s in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"study {study_name}: {len(study.trials)} trials ({counts['COMPLETE']} complete, {counts['PRUNED']} "
          f"pruned, {counts['FAIL']} failed); " + (f"best val prec@{base['select_k']} {study.best_value:.4f} "
          f"(trial {study.best_trial.number}) -> {best}" if best else "no completed trial"))
    return 0


def check_validation(cfg: Config) -> None:
    """Validation classes exist and --select_k fits one of their galleries (seen classes only read)."""
    data, _ = load_run_data(cfg, ("seen",))
    try:
        _, val = split_validation(data, cfg.val_fraction, cfg.seed)
    except DataError as exc:
        raise DataError(f"tune needs validation classes: {exc}") from None
    check_select_k("val", cfg.select_k, [len(data.images[c]) for c in val])  # its warnings come again in each trial


def open_study(storage: str, name: str, base: dict):
    """Create the study, or continue it when its base settings match this call's."""
    optuna = _optuna()
    fixed = {k: v for k, v in base.items() if k not in STUDY_FREE}
    study = optuna.create_study(storage=open_storage(storage), study_name=name, direction="maximize",
                                load_if_exists=True)
    old = study.user_attrs.get("base")
    if old is None:
        study.set_user_attr("base", fixed)
    else:
        changed = sorted(k for k in fixed if old.get(k) != fixed[k])
        if changed:
            k = changed[0]
            raise DataError(f"study {name}: made with --{k} {old.get(k)}, this call asks {fixed[k]}; "
                            "use another --study to tune other base settings")
    return study


def run_jobs(job: dict, trials: int, jobs: int) -> None:
    """Trials in this process (--jobs 1) or in ``jobs`` spawned processes sharing the storage."""
    jobs = min(jobs, trials)
    if jobs == 1:
        run_worker(job, 0, trials, 0)
        return
    shares = [trials // jobs + (i < trials % jobs) for i in range(jobs)]
    procs = [SPAWN.Process(target=run_worker, args=(job, i, shares[i], thread_share(jobs))) for i in range(jobs)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:  # the children got the same Ctrl-C; let them record their trials
        for p in procs:
            p.join(30)
        raise
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise DataError(f"a trial process exited with code {bad[0]} (its error is printed above)")


__all__ = ["main", "make_pruner"]
