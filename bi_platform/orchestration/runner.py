"""Launch the plan's runs on a Dagster instance, one after the other, and say what they did.

Each run executes in this process (``execute_in_process`` of the named job, whose
resources are the code location's) and is recorded in the instance like any other run:
the UI shows its events, logs, materializations and checks. Runs are tagged with this
process (:data:`~bi_platform.runtime.run_launcher.RUN_WORKER_TAG`) so run monitoring can
tell when it died.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from bi_platform.orchestration.plan import JobRun, Step
from bi_platform.runtime.run_launcher import fail_dead_runs, run_worker_tags

log = logging.getLogger(__name__)

#: Tag on every run this module launches.
LAUNCHED_BY_TAG = "bi_platform/launched_by"
#: The runs' console logger shows warnings and errors only: the progress lines and the
#: summary say the rest (every event is in the instance, for the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check evaluation of a run."""

    asset: str
    name: str
    passed: bool
    blocking: bool
    partition: str | None = None

    def __str__(self) -> str:
        where = f" [{self.partition}]" if self.partition else ""
        return f"{self.asset}:{self.name}{where}"


@dataclass
class RunOutcome:
    """What one run did."""

    run: JobRun
    run_id: str | None = None
    success: bool = False
    seconds: float = 0.0
    materialized: list[str] = field(default_factory=list)
    checks: list[CheckOutcome] = field(default_factory=list)
    error: str | None = None
    metadata: dict[str, dict[str, object]] = field(default_factory=dict)  # asset -> metadata


@dataclass
class StepOutcome:
    """The runs of one step; or why it was skipped (a step it needs failed) or could not
    be planned."""

    step: Step
    runs: list[RunOutcome] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.skipped is None and self.error is None and all(r.success for r in self.runs)


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    messages = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = event.step_failure_data.error
            messages.append(f"{event.step_key}: {error.message.strip().splitlines()[0]}")
    failed_checks = [
        f"{e.asset_key.to_user_string()}:{e.check_name}"
        for e in result.get_asset_check_evaluations()
        if not e.passed and e.blocking
    ]
    if failed_checks:
        messages.append(f"blocking check(s) failed: {', '.join(failed_checks)}")
    return "; ".join(messages) or "the run failed"


def execute(defs: dg.Definitions, instance: dg.DagsterInstance, job_run: JobRun) -> RunOutcome:
    """Run ``job_run`` in this process against ``instance``; never raises for a failed run."""
    job = defs.resolve_job_def(job_run.job)
    started = time.perf_counter()
    outcome = RunOutcome(job_run)
    try:
        result = job.execute_in_process(
            run_config=QUIET,
            instance=instance,
            partition_key=job_run.partition,
            tags={LAUNCHED_BY_TAG: "bi-platform materialize", **run_worker_tags()},
            raise_on_error=False,
        )
    except Exception as exc:  # a run that could not even start (bad partition, config)
        log.exception("%s could not run", job_run)
        outcome.error = f"{type(exc).__name__}: {exc}"
        outcome.seconds = time.perf_counter() - started
        return outcome
    outcome.run_id = result.run_id
    outcome.success = result.success
    outcome.seconds = time.perf_counter() - started
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        key = materialization.asset_key.to_user_string()
        outcome.materialized.append(key)
        outcome.metadata[key] = {k: v.value for k, v in materialization.metadata.items()}
    outcome.checks = [
        CheckOutcome(
            e.asset_key.to_user_string(), e.check_name, e.passed, e.blocking, job_run.partition
        )
        for e in result.get_asset_check_evaluations()
    ]
    if not result.success:
        outcome.error = _failure_message(result)
    return outcome


def run_steps(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    steps: Sequence[Step],
    on_run: Callable[[RunOutcome], None] | None = None,
) -> list[StepOutcome]:
    """Run ``steps`` in order; a step whose needed step failed is skipped, the others
    still run. ``on_run`` is called after each run (progress). Runs this host left
    STARTED after their process died are marked failed first."""
    for run_id, reason in fail_dead_runs(instance):
        log.warning("run %s marked failed: %s", run_id, reason)
    outcomes: dict[str, StepOutcome] = {}
    for step in steps:
        failed_needs = [n for n in step.needs if n in outcomes and not outcomes[n].success]
        if failed_needs:
            outcomes[step.name] = StepOutcome(step, skipped=f"{', '.join(failed_needs)} failed")
            continue
        try:
            job_runs = step.runs(instance)
        except Exception as exc:
            log.exception("step %s: could not plan its runs", step.name)
            outcomes[step.name] = StepOutcome(step, error=f"{type(exc).__name__}: {exc}")
            continue
        outcome = StepOutcome(step)
        for job_run in job_runs:
            result = execute(defs, instance, job_run)
            outcome.runs.append(result)
            if on_run is not None:
                on_run(result)
        outcomes[step.name] = outcome
    return list(outcomes.values())
