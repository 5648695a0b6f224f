"""The asset graph, pinned: every asset key with its deps, group, kinds, owners,
partitions and automation condition; every check (and whether it blocks); every job's
selection and executor; every schedule and sensor.

A deliberate change is recorded with `make update-snapshot` and reviewed in the diff of
``__snapshots__/test_asset_graph/test_asset_graph_is_pinned.json``.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
import pytest
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from bi_platform.definitions import defs


@pytest.fixture
def snapshot_json(snapshot: SnapshotAssertion) -> SnapshotAssertion:
    return snapshot.use_extension(JSONSnapshotExtension)


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> str | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"dynamic:{partitions_def.name}"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        start = partitions_def.start.date().isoformat()
        return f"time:{partitions_def.cron_schedule}@{partitions_def.timezone} from {start}"
    return type(partitions_def).__name__


def asset_graph_description() -> dict[str, Any]:
    """The code location's graph as plain, sorted data."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        condition = node.automation_condition
        assets[key.to_user_string()] = {
            "deps": sorted(k.to_user_string() for k in node.parent_keys),
            "group": node.group_name,
            "kinds": sorted(node.kinds),
            "owners": sorted(node.owners),
            "partitions": _partitions(node.partitions_def),
            "automation_condition": condition.get_label() if condition else None,
            "materializable": node.is_materializable,
            "checks": {
                check.name: {"blocking": graph.get(check).blocking}
                for check in sorted(node.check_keys, key=lambda c: c.name)
            },
        }
    jobs = {}
    for job in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        if job.name.startswith("__"):
            continue
        selected = job.asset_layer.selected_asset_keys
        jobs[job.name] = {
            "assets": sorted(k.to_user_string() for k in selected),
            "executor": job.executor_def.name,
            "tags": dict(sorted(job.tags.items())),
        }
    repository = defs.get_repository_def()
    schedules = {
        s.name: {
            "cron": s.cron_schedule,
            "timezone": s.execution_timezone,
            "job": s.job_name,
            "default_status": s.default_status.value,
        }
        for s in sorted(repository.schedule_defs, key=lambda s: s.name)
    }
    sensors = {
        s.name: {
            "type": s.sensor_type.value,
            "jobs": sorted(t.job_name for t in s.targets),
            "minimum_interval_seconds": s.minimum_interval_seconds,
            "default_status": s.default_status.value,
        }
        for s in sorted(repository.sensor_defs, key=lambda s: s.name)
    }
    return {"assets": assets, "jobs": jobs, "schedules": schedules, "sensors": sensors}


def test_asset_graph_is_pinned(snapshot_json: SnapshotAssertion) -> None:
    assert asset_graph_description() == snapshot_json


def test_every_asset_has_a_description_kinds_and_owners() -> None:
    graph = defs.resolve_asset_graph()
    lacking = {
        key.to_user_string(): [
            what
            for what, value in (
                ("description", node.description),
                ("kinds", node.kinds),
                ("owners", node.owners),
            )
            if not value
        ]
        for key in graph.get_all_asset_keys()
        for node in [graph.get(key)]
    }
    assert {key: what for key, what in lacking.items() if what} == {}
