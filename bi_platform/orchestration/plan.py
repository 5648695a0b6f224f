"""What ``bi-platform materialize`` runs, in dependency order.

Every run is one of the code location's named jobs; its partitions come from the same
helpers the sensors use: the ETL inbox files not processed yet, the news inbox days not
ingested yet (or changed since), the complete cadastral load dates not processed yet.
A step's runs are computed when the step starts, so each sees what the previous steps
did (the ETL report needs at least one processed file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from bi_platform.cadastral.automation import cadastral_job, pending_load_dates
from bi_platform.etl.assets import processed_files
from bi_platform.etl.automation import (
    etl_file_job,
    etl_report_job,
    pending_partitions,
    register_inbox_partitions,
)
from bi_platform.etl.resources import EtlResource
from bi_platform.news.automation import (
    hf_news_sync_job,
    news_ingest_job,
    news_setup_job,
    pending_inbox_days,
)
from bi_platform.retail.automation import retail_tables_job
from bi_platform.serving.automation import serving_warehouse_job

#: The domains, in the order they run (serving reads what retail wrote).
DOMAINS = ("retail", "serving", "news", "etl", "cadastral")


@dataclass(frozen=True)
class JobRun:
    """One run to launch: a named job, for one partition or none."""

    job: str
    partition: str | None = None

    def __str__(self) -> str:
        return f"{self.job}[{self.partition}]" if self.partition else self.job


@dataclass(frozen=True)
class Step:
    """A group of runs of one domain; skipped when a step it ``needs`` failed."""

    name: str
    domain: str
    runs: Callable[[dg.DagsterInstance], list[JobRun]]
    needs: tuple[str, ...] = field(default=())


def _etl_files(instance: dg.DagsterInstance) -> list[JobRun]:
    etl = EtlResource()
    registration = register_inbox_partitions(instance, etl.inbox_dir, etl.max_bytes, etl.audit_path)
    return [
        JobRun(etl_file_job.name, key) for key in pending_partitions(instance, registration.current)
    ]


def _etl_report(instance: dg.DagsterInstance) -> list[JobRun]:
    files, _ = processed_files(instance, EtlResource())
    return [JobRun(etl_report_job.name)] if files else []


STEPS: tuple[Step, ...] = (
    Step("retail tables", "retail", lambda _: [JobRun(retail_tables_job.name)]),
    Step(
        "warehouse",
        "serving",
        lambda _: [JobRun(serving_warehouse_job.name)],
        needs=("retail tables",),
    ),
    Step("news setup", "news", lambda _: [JobRun(news_setup_job.name)]),
    Step(
        "news ingest",
        "news",
        lambda instance: [JobRun(news_ingest_job.name, d) for d in pending_inbox_days(instance)],
        needs=("news setup",),
    ),
    Step("news sync", "news", lambda _: [JobRun(hf_news_sync_job.name)], needs=("news setup",)),
    Step("etl files", "etl", _etl_files),
    Step("etl report", "etl", _etl_report),
    Step(
        "cadastral",
        "cadastral",
        lambda instance: [JobRun(cadastral_job.name, d) for d in pending_load_dates(instance)],
    ),
)


def steps_for(domains: Sequence[str] | None = None) -> list[Step]:
    """The steps of ``domains`` (all when None), in run order; unknown names raise."""
    if domains is None:
        return list(STEPS)
    unknown = sorted(set(domains) - set(DOMAINS))
    if unknown:
        raise ValueError(f"unknown domain(s) {unknown}; one of: {', '.join(DOMAINS)}")
    return [step for step in STEPS if step.domain in domains]
