"""Where readers find the retail tables: their asset keys and the published files.

The public API other domains (serving) and the checks read the retail tables through;
the assets themselves are in :mod:`bi_platform.retail.assets`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

#: The asset group (and key prefix) of every retail asset.
GROUP = "retail"


def raw_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, "raw", name])


def table_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def materialized_path(instance: dg.DagsterInstance, key: dg.AssetKey) -> Path:
    """Where readers read ``key``: the published table (its ``path`` metadata). A staged
    version that did not pass its checks is not there (see :func:`version_under_check`)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialized yet")
    return Path(str(event.asset_materialization.metadata["path"].value))


def version_under_check(instance: dg.DagsterInstance, key: dg.AssetKey) -> tuple[Path, Path | None]:
    """(published path, staged version or None) of ``key``'s latest materialization: the
    staged version when it is still waiting to be published, else None (the checks then
    look at the published table)."""
    event = instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise dg.Failure(f"{key.to_user_string()} has not been materialized yet")
    metadata = event.asset_materialization.metadata
    published = Path(str(metadata["path"].value))
    staged = metadata.get("staged_path")
    if staged is not None and Path(str(staged.value)).exists():
        return published, Path(str(staged.value))
    return published, None
