"""The cadastral job and the sensor that runs it once per complete new load date.

``cadastral_job`` runs the whole group for one load date (a partition of
``cadastral_load_dates``) in one process (``in_process_executor``), so the Spark session
starts once per run instead of once per step; its runs are serialised (the
``bi_platform/serial`` tag, limited to one run at a time by the instance's run queue),
so load dates are published in the order they were requested.

``cadastral_new_load_sensor`` (every 5 minutes) registers the load dates that all four
source tables have and requests one run per date not processed yet, oldest first
(:func:`plan_load_dates`). It never re-runs a date already processed, skips dates older
than the newest processed one (each load date is a full snapshot: an older one is
superseded), retries a failed date (up to :data:`MAX_ATTEMPTS` runs in all) unless a
newer date is already on its way, and reports incomplete dates without running them.
:func:`pending_load_dates` is the same decision without the daemon (``bi-platform
materialize``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg

from bi_platform.cadastral.assets import GROUP, PG_SYNC, load_dates
from bi_platform.cadastral.sources import complete_load_dates, incomplete_load_dates
from bi_platform.settings import get_settings

#: Runs per load date (the first and the retries) before the sensor gives up on it.
MAX_ATTEMPTS = 3
#: How many of the latest cadastral_job runs the plan looks at.
RUN_HISTORY = 1000
#: Run tag the instance's run queue limits to one run at a time (dagster.yaml).
SERIAL_TAG = "bi_platform/serial"

cadastral_job = dg.define_asset_job(
    "cadastral_job",
    selection=dg.AssetSelection.groups(GROUP),
    executor_def=dg.in_process_executor,
    tags={SERIAL_TAG: "cadastral"},
    description=(
        "The person registry for one load date: raw snapshots -> Spark transforms -> Delta "
        "tables -> PostgreSQL sync, with every check, on one Spark session."
    ),
)

_ACTIVE = {
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
}
_FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass(frozen=True)
class LoadDateRequest:
    """A run to request: the load date and which attempt it is (1 = first run)."""

    load_date: str
    attempt: int

    @property
    def run_key(self) -> str:
        return f"dat_ref_carga={self.load_date}#{self.attempt}"


@dataclass
class LoadDatePlan:
    """What to do with each complete load date (see :func:`plan_load_dates`)."""

    requests: list[LoadDateRequest] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # date -> why it is not requested


def plan_load_dates(
    complete: Sequence[str],
    done: set[str],
    runs: Mapping[str, Sequence[dg.DagsterRunStatus]],
    max_attempts: int = MAX_ATTEMPTS,
) -> LoadDatePlan:
    """Decide which complete load dates to run now.

    Args:
        complete: load dates (``YYYY-MM-DD``) that every source table has.
        done: dates already processed (a successful run, or their PostgreSQL sync
            materialized).
        runs: statuses of the ``cadastral_job`` runs of each date, oldest first.
        max_attempts: runs per date before giving up.

    Returns:
        Requests oldest first; dates done, superseded (older than the newest done) or
        waiting (a run in progress, a newer date on its way, attempts exhausted).
    """
    plan = LoadDatePlan()
    newest_done = max(done, default=None)
    candidates = []
    for day in sorted(complete):
        if day in done:
            plan.done.append(day)
        elif newest_done is not None and day < newest_done:
            plan.superseded.append(day)
        else:
            candidates.append(day)
    active = {day for day in candidates if any(s in _ACTIVE for s in runs.get(day, ()))}
    for position, day in enumerate(candidates):
        statuses = list(runs.get(day, ()))
        if day in active:
            plan.waiting[day] = "a run is queued or in progress"
            continue
        if not statuses:
            plan.requests.append(LoadDateRequest(day, 1))
            continue
        failures = sum(1 for s in statuses if s in _FAILED)
        newer_active = any(later in active for later in candidates[position + 1 :])
        if failures >= max_attempts:
            plan.waiting[day] = (
                f"gave up after {failures} failed runs: fix the source files, then run "
                "cadastral_job for this partition by hand"
            )
        elif newer_active:
            plan.waiting[day] = "a newer load date is being processed and will supersede it"
        else:
            plan.requests.append(LoadDateRequest(day, len(statuses) + 1))
    return plan


def _run_statuses(instance: dg.DagsterInstance) -> dict[str, list[dg.DagsterRunStatus]]:
    """Statuses of the cadastral_job runs per partition, oldest first."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(job_name=cadastral_job.name), limit=RUN_HISTORY
    )
    statuses: dict[str, list[dg.DagsterRunStatus]] = {}
    for record in reversed(records):  # oldest first
        partition = record.dagster_run.tags.get("dagster/partition")
        if partition:
            statuses.setdefault(partition, []).append(record.dagster_run.status)
    return statuses


def current_plan(instance: dg.DagsterInstance) -> tuple[LoadDatePlan, dict[str, list[str]]]:
    """The plan for the raw exports as they are now, and the incomplete dates (date ->
    the source tables that lack it)."""
    raw_root = get_settings().cadastral_raw_dir
    complete = [d.isoformat() for d in complete_load_dates(raw_root)]
    incomplete = {d.isoformat(): tables for d, tables in incomplete_load_dates(raw_root).items()}
    runs = _run_statuses(instance)
    done = {day for day, statuses in runs.items() if dg.DagsterRunStatus.SUCCESS in statuses}
    done |= set(instance.get_materialized_partitions(PG_SYNC))
    return plan_load_dates(complete, done, runs), incomplete


def register_load_dates(instance: dg.DagsterInstance, dates: Sequence[str]) -> list[str]:
    """Add the missing ``cadastral_load_dates`` partitions; returns those added."""
    known = set(instance.get_dynamic_partitions(load_dates.name))
    new = [day for day in dates if day not in known]
    if new:
        instance.add_dynamic_partitions(load_dates.name, new)
    return new


def pending_load_dates(instance: dg.DagsterInstance) -> list[str]:
    """The load dates to process now, oldest first, registered as partitions (what the
    sensor would request)."""
    plan, _ = current_plan(instance)
    dates = [request.load_date for request in plan.requests]
    register_load_dates(instance, dates)
    return dates


@dg.sensor(
    job=cadastral_job,
    minimum_interval_seconds=300,
    description=(
        "One cadastral_job run per new load date that all four sources have, oldest "
        "first; a failed date is retried (3 runs at most) unless a newer one supersedes it."
    ),
)
def cadastral_new_load_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    plan, incomplete = current_plan(context.instance)
    for day, tables in incomplete.items():
        context.log.info("dat_ref_carga=%s waits for %s", day, ", ".join(tables))
    for day, reason in plan.waiting.items():
        context.log.info("dat_ref_carga=%s not requested: %s", day, reason)
    if plan.superseded:
        context.log.info("superseded (older than a processed date): %s", plan.superseded)
    known = set(context.instance.get_dynamic_partitions(load_dates.name))
    new = [r.load_date for r in plan.requests if r.load_date not in known]
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(partition_key=r.load_date, run_key=r.run_key) for r in plan.requests
        ],
        dynamic_partitions_requests=[load_dates.build_add_request(new)] if new else [],
        skip_reason=None if plan.requests else "no new complete load date",
    )
