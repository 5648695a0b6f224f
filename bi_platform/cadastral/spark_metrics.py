"""Spark's own stage metrics for a block of work (one asset's transforms and write).

``with StageMetricsCollector(spark).measure("coletapedt001") as m: ...`` tags every job
the block starts (this thread) with a Spark job group, then reads the jobs' stages from
Spark's live status store, the same data the driver UI's REST API serves under
``/api/v1/applications/<id>/stages`` (it exists with ``spark.ui.enabled=false`` too). Per
block: the number of Spark jobs and of completed stages (skipped ones, whose shuffle
output was reused, listed apart), shuffle read/write bytes, memory/disk spill, input and
output bytes and executor run time.

The status store is reached through py4j (``SparkContext._jsc``): a classic local or
cluster session. On a Spark Connect session there is no SparkContext in the client;
the metrics then come back with ``available=False`` and the reason, and the block runs
unchanged. Nothing here ever fails the work it measures: any error reading the store is
reported as unavailable metrics. Pure: no Dagster import.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_JOB_GROUP = "spark.jobGroup.id"
_JOB_DESCRIPTION = "spark.job.description"
_INTERRUPT = "spark.job.interruptOnCancel"


@dataclass(frozen=True)
class StageRecord:
    """One attempt of one Spark stage, as the status store has it."""

    stage_id: int
    attempt: int
    name: str
    status: str  # COMPLETE | FAILED | SKIPPED | ACTIVE | PENDING
    tasks: int
    executor_run_ms: int
    input_bytes: int
    output_bytes: int
    shuffle_read_bytes: int
    shuffle_write_bytes: int
    memory_spill_bytes: int
    disk_spill_bytes: int


@dataclass
class StageMetrics:
    """The Spark work of one measured block (sums over its completed stage attempts)."""

    label: str
    available: bool = False
    reason: str = ""
    jobs: int = 0
    stages: int = 0  # completed stage attempts (the work actually done)
    skipped_stages: int = 0  # stages of the block's jobs that reused earlier output
    failed_stages: int = 0
    tasks: int = 0
    executor_run_ms: int = 0
    input_bytes: int = 0
    output_bytes: int = 0
    shuffle_read_bytes: int = 0
    shuffle_write_bytes: int = 0
    memory_spill_bytes: int = 0
    disk_spill_bytes: int = 0
    records: list[StageRecord] = field(default_factory=list)

    @property
    def shuffle_bytes(self) -> int:
        """Shuffle write bytes (each shuffled byte is written once, read once or more)."""
        return self.shuffle_write_bytes

    @property
    def spill_bytes(self) -> int:
        return self.memory_spill_bytes + self.disk_spill_bytes

    def add(self, record: StageRecord) -> None:
        self.records.append(record)
        if record.status == "SKIPPED":
            self.skipped_stages += 1
            return
        if record.status == "FAILED":
            self.failed_stages += 1
        elif record.status == "COMPLETE":
            self.stages += 1
        self.tasks += record.tasks
        self.executor_run_ms += record.executor_run_ms
        self.input_bytes += record.input_bytes
        self.output_bytes += record.output_bytes
        self.shuffle_read_bytes += record.shuffle_read_bytes
        self.shuffle_write_bytes += record.shuffle_write_bytes
        self.memory_spill_bytes += record.memory_spill_bytes
        self.disk_spill_bytes += record.disk_spill_bytes

    def summary(self) -> dict[str, Any]:
        """Flat figures (no per-stage records): for JSON lines and asset metadata."""
        if not self.available:
            return {"available": False, "reason": self.reason}
        out = {k: v for k, v in asdict(self).items() if k not in ("records", "label", "reason")}
        out["shuffle_bytes"] = self.shuffle_bytes
        out["spill_bytes"] = self.spill_bytes
        return out


def combine(label: str, parts: list[StageMetrics]) -> StageMetrics:
    """One :class:`StageMetrics` summing ``parts`` (unavailable if any part is)."""
    total = StageMetrics(label, available=bool(parts) and all(p.available for p in parts))
    if not total.available:
        total.reason = next((p.reason for p in parts if not p.available), "nothing measured")
        return total
    for part in parts:
        total.jobs += part.jobs
        for record in part.records:
            total.add(record)
    return total


class StageMetricsCollector:
    """Reads stage metrics of job groups from a classic session's status store."""

    def __init__(self, spark: SparkSession) -> None:
        self.reason = ""
        self._sc = None
        self._store = None
        try:
            sc = spark.sparkContext  # raises on Spark Connect
            jsc = sc._jsc.sc()
            self._store = jsc.statusStore()
            self._bus = jsc.listenerBus()
            self._jvm = sc._jvm
            self._gateway = sc._gateway
            self._sc = sc
        except Exception as exc:  # Spark Connect, a stopped session, another JVM layout
            self.reason = (
                f"no SparkContext status store ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else 'unavailable'}); "
                "Spark Connect sessions do not expose stage metrics to the client"
            )
            log.info("stage metrics unavailable: %s", self.reason)

    @property
    def available(self) -> bool:
        return self._sc is not None

    @contextmanager
    def measure(self, label: str) -> Iterator[StageMetrics]:
        """Tag the block's jobs with a fresh job group; on exit fill the yielded metrics."""
        metrics = StageMetrics(label, reason=self.reason)
        if self._sc is None:
            yield metrics
            return
        sc = self._sc
        group = f"bi_platform:{label}:{uuid.uuid4().hex[:12]}"
        previous = {k: sc.getLocalProperty(k) for k in (_JOB_GROUP, _JOB_DESCRIPTION, _INTERRUPT)}
        sc.setLocalProperty(_JOB_GROUP, group)
        sc.setLocalProperty(_JOB_DESCRIPTION, label)
        try:
            yield metrics
        finally:
            for key, value in previous.items():
                sc.setLocalProperty(key, value)
            self._fill(metrics, group)

    def _fill(self, metrics: StageMetrics, group: str) -> None:
        try:
            self._bus.waitUntilEmpty()  # the status store is fed asynchronously
            job_ids = list(self._sc.statusTracker().getJobIdsForGroup(group))
            stage_ids: set[int] = set()
            for job_id in job_ids:
                stage_ids.update(int(s) for s in self._seq(self._store.job(job_id).stageIds()))
            for stage_id in sorted(stage_ids):
                for record in self._stage_records(stage_id):
                    metrics.add(record)
            metrics.jobs = len(job_ids)
            metrics.available = True
        except Exception as exc:  # never fail the measured work
            metrics.available = False
            metrics.reason = f"status store not readable: {type(exc).__name__}: {exc}"[:300]
            log.warning("stage metrics of %s: %s", metrics.label, metrics.reason)

    def _seq(self, seq: Any) -> list[Any]:
        return [seq.apply(i) for i in range(seq.size())]

    def _stage_records(self, stage_id: int) -> list[StageRecord]:
        no_status = self._jvm.java.util.ArrayList()
        no_quantiles = self._gateway.new_array(self._jvm.double, 0)
        try:
            attempts = self._seq(
                self._store.stageData(stage_id, False, no_status, False, no_quantiles)
            )
        except Exception:  # evicted from the store (spark.ui.retainedStages)
            return []
        return [
            StageRecord(
                stage_id=int(s.stageId()),
                attempt=int(s.attemptId()),
                name=str(s.name()),
                status=str(s.status().toString()),
                tasks=int(s.numTasks()),
                executor_run_ms=int(s.executorRunTime()),
                input_bytes=int(s.inputBytes()),
                output_bytes=int(s.outputBytes()),
                shuffle_read_bytes=int(s.shuffleReadBytes()),
                shuffle_write_bytes=int(s.shuffleWriteBytes()),
                memory_spill_bytes=int(s.memoryBytesSpilled()),
                disk_spill_bytes=int(s.diskBytesSpilled()),
            )
            for s in attempts
        ]
