"""Automation helpers every domain shares: the gated automation condition and what the
instance knows of past materializations.

A gate is a blocking asset check. Inside one run Dagster stops the downstream steps of a
failed gate; across runs, an automated asset must look at its upstream gates itself:
:func:`after_upstream_gates` is ``eager()`` plus "every upstream blocking check passed".
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg


def after_upstream_gates(
    ignore_missing: dg.AssetSelection | None = None,
) -> dg.AutomationCondition:
    """Materialize after any upstream update, once every upstream blocking check passed.

    ``eager()`` (an upstream materialization since the last request, nothing upstream or
    here in progress, no upstream missing) AND
    ``all_deps_blocking_checks_passed()``: a failed gate upstream stops the automation
    until the upstream asset is fixed and passes its gate.

    Args:
        ignore_missing: upstream assets whose missing partitions must not hold the
            automation back (e.g. a daily-partitioned source where some days never come:
            ``eager()`` alone waits for every day since the start date).

    Returns:
        The condition, labelled ``after_upstream_gates``.
    """
    deps_missing = dg.AutomationCondition.any_deps_missing()
    if ignore_missing is not None:
        deps_missing = deps_missing.ignore(ignore_missing)
    return (
        (
            dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
        ).since_last_handled()
        & ~deps_missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("after_upstream_gates")


def latest_materialization_times(
    instance: dg.DagsterInstance, key: dg.AssetKey, partitions: Iterable[str]
) -> dict[str, float]:
    """Partition -> timestamp of its latest materialization, for those of ``partitions``
    materialized at least once."""
    wanted = set(partitions)
    storage_ids = {
        partition: storage_id
        for partition, storage_id in instance.get_latest_storage_id_by_partition(
            key, dg.DagsterEventType.ASSET_MATERIALIZATION
        ).items()
        if partition in wanted
    }
    if not storage_ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, storage_ids=list(storage_ids.values())),
        limit=len(storage_ids),
    ).records
    return {r.partition_key: r.timestamp for r in records if r.partition_key is not None}
