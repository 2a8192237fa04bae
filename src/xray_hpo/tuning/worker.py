"""A tune worker: joins a study in storage and runs trials until it holds n_trials.

Workers are separate processes on purpose. ClearML allows one open task per process, so
the coordinator holds the optimizer task and each worker opens and closes one training
task per trial in sequence; and n workers on n cores train in parallel, one thread each.
The same loop serves local workers (spawned by the tune stage) and remote ones
(``xray-hpo tune-worker --storage URL`` on another machine); in window or rounds mode
(``xray_hpo.tuning.rounds``) it samples nothing and runs the trials the coordinator enqueued.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from xray_hpo.config import ParamSpec, PrunerConfig, TrainConfig
from xray_hpo.errors import UserError
from xray_hpo.tuning import storage as stores
from xray_hpo.tuning import study as studies
from xray_hpo.tuning.lifetime import die_with_parent, epoch_delay_for_tests, raise_interrupt
from xray_hpo.tuning.rounds import EnqueuedTrialsOnly, NoEnqueuedTrial, worker_study

ROUNDS_POLL_S = 0.1  # window, rounds: a worker may wait for its next trial, so it looks often
LOST_CHECK_S = 5.0  # seconds between checks for trials of dead workers while trials run


class SurplusTrial(Exception):
    """The budget filled up between the worker's check and its trial's creation."""


@dataclass
class WorkerContext:
    study: optuna.Study
    train_config: TrainConfig
    space: dict[str, ParamSpec]
    train_data: Any  # xray_hpo.training.SplitData (torch is imported lazily)
    val_data: Any
    device: Any
    pruner: PrunerConfig = field(default_factory=lambda: PrunerConfig(name="none"))
    chance_acc: float = 0.0  # always guessing the most common val class
    surplus: bool = False  # set by the objective when its trial lost the race for a place
    epoch_delay_s: float = 0.0  # tests only ($XRAY_HPO_TEST_EPOCH_DELAY): a slow worker


def objective(trial: optuna.Trial, ctx: WorkerContext) -> float:
    """Suggest, build, train, report each epoch, prune: the canonical Optuna objective."""
    from xray_hpo.tracking.settings import TRIAL_ATTR_TASK
    from xray_hpo.tracking.trackers import TrialTracker
    from xray_hpo.training import EpochStats, train
    from xray_hpo.tuning.search_space import suggest_hparams

    studies.tag_trial(trial)  # first: a dead worker's trial is then detected exactly
    target = int(ctx.study.user_attrs.get(studies.ATTR_TARGET, 0))
    if not studies.within_budget(ctx.study.get_trials(deepcopy=False), trial.number, target):
        trial.set_user_attr(studies.ATTR_SURPLUS, True)
        ctx.surplus = True
        raise SurplusTrial(f"trial {trial.number} is past the budget of {target}")
    history: list[EpochStats] = []
    tracker: TrialTracker | None = None

    reporting_s = [0.0]  # time spent in on_epoch (storage, tracker), not in epochs

    def on_epoch(stats: EpochStats) -> None:
        started = time.perf_counter()
        time.sleep(ctx.epoch_delay_s)
        try:
            history.append(stats)
            if tracker is not None:
                tracker.log_epoch(stats)
            trial.report(stats.val_acc, stats.epoch)
            # No pruner: no should_prune round trip. Last epoch: stopping saves nothing and
            # would throw a finished run away.
            if ctx.pruner.name == "none" or stats.epoch == ctx.train_config.epochs:
                return
            if stuck_at_chance(history, ctx.pruner.stop_at_chance_after, ctx.chance_acc):
                raise optuna.TrialPruned(f"no better than chance ({ctx.chance_acc:.3f}) "
                                         f"after epoch {stats.epoch}")
            if trial.should_prune():
                raise optuna.TrialPruned(f"stopped by the {ctx.pruner.name} pruner after "
                                         f"epoch {stats.epoch}")
        finally:
            reporting_s[0] += time.perf_counter() - started

    # The trial's task is the tracker's context: its __exit__ reports the outcome (the same
    # code the tracking tests drive). The stack closes it last, after storage has the
    # outcome, so a slow close cannot delay what decides the budget.
    with contextlib.ExitStack() as stack:
        try:
            hparams = suggest_hparams(trial, ctx.space)
            tracker = stack.enter_context(
                TrialTracker(ctx.study.study_name, trial.number, hparams.as_dict(),
                             parent=_optimizer_task(ctx.study)))
            if tracker.id:  # the optimizer's table links each row to this task
                trial.set_user_attr(TRIAL_ATTR_TASK, tracker.id)
            started = time.perf_counter()
            result = train(hparams, ctx.train_config, ctx.train_data, ctx.val_data,
                           device=ctx.device, on_epoch=on_epoch)
            trial.set_user_attr(studies.ATTR_TRAIN_S,
                                round(time.perf_counter() - started - reporting_s[0], 4))
        except BaseException as exc:
            _record_outcome(trial, history, exc)
            raise
        _record_outcome(trial, history, None)
    return result.best_val_acc


def _optimizer_task(study: optuna.Study) -> str | None:
    """The optimizer task the tune stage passed (local workers), else the one the study
    recorded (a remote ``tune-worker``, which has no tune stage above it)."""
    from xray_hpo.tracking.settings import STUDY_ATTR_OPTIMIZER, parent_task_id

    return parent_task_id() or study.user_attrs.get(STUDY_ATTR_OPTIMIZER)


def _record_outcome(trial: optuna.Trial, history: list[Any], exc: BaseException | None) -> None:
    """Store how the trial ended, as its tracker reports it (:func:`trial_outcome`).

    Failed (any error of this configuration) is a result and carries ``fail_reason``.
    Interrupted (Ctrl-C, SIGTERM) carries no fail_reason, so the trial is replaced next run;
    after a storage error (the storage failed, or another process failed this trial when
    its heartbeat looked stale) nothing more is written to it.
    """
    from xray_hpo.tracking.trackers import trial_outcome

    state, reason = trial_outcome(exc)
    if state == "interrupted":
        if not isinstance(exc, Exception):
            trial.set_user_attr("interrupted", True)
        return
    if state == "pruned":
        trial.set_user_attr("prune_reason", str(exc))
    elif state == "failed":
        trial.set_user_attr("fail_reason", reason)
    if history:
        best = max(history, key=lambda s: (s.val_acc, -s.val_loss, -s.epoch))
        trial.set_user_attr("val_loss", best.val_loss)
        trial.set_user_attr("best_epoch", best.epoch)
        trial.set_user_attr("best_val_acc", best.val_acc)
    trial.set_user_attr("epochs_run", len(history))


def stuck_at_chance(history: list[Any], after: int, chance_acc: float) -> bool:
    """True once ``after`` epochs have run and none beat always guessing one class.

    Such a run has diverged to a constant prediction: on the phantom data no trial at
    chance after 2 epochs ever left it (60 trials, 3 seeds, bench/RESULTS.md), and all
    such runs tie, so neither successive halving nor the median can rank them out.
    """
    return (after > 0 and len(history) >= after
            and max(s.val_acc for s in history) <= chance_acc + 1e-9)


def load_context(study: optuna.Study, settings: studies.StudySettings,
                 prepared_dir: Path) -> WorkerContext:
    from xray_hpo.training import configure_torch, load_splits

    spec = study.user_attrs[studies.ATTR_SPEC]
    for split, expected in spec["data"].items():
        actual = studies.file_sha256(prepared_dir / f"{split}.npz")
        if actual != expected:
            raise SystemExit(f"{prepared_dir / f'{split}.npz'}: sha256 {actual[:12]} differs "
                             f"from the study's data {expected[:12]}; run prepare on the same "
                             f"data version (dvc pull / dvc repro prepare)")
    train_config = settings.train
    device = configure_torch(train_config)
    data = load_splits(prepared_dir, "train", "val")
    labels = data["val"].labels
    chance_acc = float(labels.bincount().max()) / len(labels) if len(labels) else 0.0
    return WorkerContext(study, train_config, settings.search_space,
                         data["train"], data["val"], device,
                         pruner=settings.pruner, chance_acc=chance_acc)


def run_worker(storage_spec: str, study_name: str, prepared_dir: Path,
               worker_index: int | None, threads: int, poll_s: float = 0.5,
               parent_pid: int | None = None) -> int:
    """Run trials until the study's target is reached; returns how many this worker ran.

    ``parent_pid``: the tune stage that spawned this worker; the worker stops when it dies.
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    storage = stores.open_storage(storage_spec)
    probe = optuna.load_study(study_name=study_name, storage=storage)
    settings = studies.settings_from_spec(probe.user_attrs[studies.ATTR_SPEC], study_name,
                                          num_threads=threads)
    study = worker_study(probe, settings.sampler, settings.pruner, settings.train.epochs,
                         worker_index)
    if isinstance(study, EnqueuedTrialsOnly):
        poll_s = min(poll_s, ROUNDS_POLL_S)
    ctx = load_context(study, settings, prepared_dir)
    ctx.epoch_delay_s = epoch_delay_for_tests(worker_index)
    ran = 0
    last_lost_check = -math.inf
    while True:
        if parent_pid is not None and os.getppid() != parent_pid:
            break  # the tune stage that spawned us is gone
        # Several full reads of the study on PostgreSQL: at most every LOST_CHECK_S while
        # trials run (Optuna checks heartbeats before each trial anyway), every poll while
        # waiting, when a dead worker's trial may be all that keeps the budget from filling.
        if time.monotonic() - last_lost_check >= LOST_CHECK_S:
            studies.fail_lost_trials(study)
            last_lost_check = time.monotonic()
        target = int(study.user_attrs.get(studies.ATTR_TARGET, 0))
        trials = study.get_trials(deepcopy=False)
        if sum(studies.is_counted(t) for t in trials) >= target:
            break
        if sum(studies.holds_slot(t) for t in trials) >= target:
            time.sleep(poll_s)  # the budget is in flight elsewhere; wait in case a worker dies
            last_lost_check = -math.inf
            continue
        ctx.surplus = False
        try:
            study.optimize(lambda t: objective(t, ctx), n_trials=1, catch=(Exception,),
                           gc_after_trial=False, show_progress_bar=False)
        except NoEnqueuedTrial:
            time.sleep(poll_s)  # window, rounds: the next trial is not enqueued yet
            continue
        except optuna.exceptions.UpdateFinishedTrialError as exc:
            # Our trial was failed by another process (heartbeat missed, e.g. the database
            # was unreachable longer than the grace period); it is replaced, we go on.
            print(f"tune-worker: {exc}; continuing", file=sys.stderr)
            continue
        if ctx.surplus:
            time.sleep(poll_s)  # lost a race for the last place: wait like the others
            last_lost_check = -math.inf
            continue
        ran += 1
    return ran


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune-worker", help="join a study in shared storage and run its trials",
        description="Join a study from any machine: it runs trials until the study holds "
                    "its n_trials, using prepared data identical to the study's.")
    parser.add_argument("--storage", help="storage URL (postgresql://...) or journal:PATH; "
                        f"default ${stores.ENV_STORAGE} or the project's journal")
    parser.add_argument("--study", help="study name (default: the storage's newest study)")
    parser.add_argument("--prepared", type=Path, default=Path("prepared"),
                        help="prepared data folder (default: prepared)")
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, raise_interrupt)
    # Under nohup or `cmd &` in a script SIGINT arrives ignored, and the tune stage keeps
    # ignoring it; its workers must too, or a stray Ctrl-C would stop them and not the stage.
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signal.signal(signal.SIGINT, raise_interrupt)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna").setLevel(logging.WARNING)
    from xray_hpo.tracking.settings import resolve_mode

    resolve_mode()  # a bad $XRAY_HPO_CLEARML: one line now, not a failed trial per try
    storage_spec = stores.resolve_storage(args.storage)
    name = args.study
    if name is None:
        summaries = optuna.get_all_study_summaries(stores.open_storage(storage_spec))
        if not summaries:
            print(f"{stores.redact(storage_spec)}: no study found; run the tune stage first",
                  file=sys.stderr)
            return 2
        name = max(summaries, key=lambda s: s._study_id).study_name
    try:
        ran = run_worker(storage_spec, name, args.prepared, args.worker_index, args.threads,
                         parent_pid=args.parent_pid)
        code = 0
    except KeyboardInterrupt:
        ran, code = 0, 130
    if args.parent_pid is None:
        if code == 0:
            print(f"tune-worker: ran {ran} trial(s) of study {name}")
        return code
    # A worker of the tune stage: every trial is already in storage and its tracker task
    # closed. Skip the interpreter's teardown (about 2 s with torch loaded), which the
    # stage would otherwise wait for at the end of every run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """``python -m xray_hpo.tuning.worker``: how the tune stage starts its local workers,
    without loading the other subcommands' modules into every worker."""
    parser = argparse.ArgumentParser(prog="python -m xray_hpo.tuning.worker")
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tune-worker", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"tune-worker: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
