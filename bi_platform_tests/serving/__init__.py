"""Tests of the serving domain, on the `small` retail profile.

:func:`small_lake` seeds the raw retail exports and materializes the retail tables once
per test session (in its own BI_PLATFORM_HOME and Dagster instance); every serving test
module builds its warehouses from that lake.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from bi_platform.retail.assets import mart_assets, raw_exports, typed_tables
from bi_platform.retail.checks import retail_checks
from bi_platform.retail.definitions import resources as retail_resources
from bi_platform.retail.sample import write_retail_exports

#: The retail tables with their checks (which publish each typed table once it passed).
RETAIL_ASSETS = [*raw_exports, *typed_tables, *mart_assets, *retail_checks]


@dataclass(frozen=True)
class SmallLake:
    home: Path
    lake_dir: Path
    instance: dg.DagsterInstance


@functools.cache
def small_lake() -> SmallLake:
    """The `small` retail lake, materialized once per session."""
    home = Path(tempfile.mkdtemp(prefix="bi_serving_lake_"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BI_PLATFORM_HOME", str(home))
        write_retail_exports(home / "raw" / "retail", "small")
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(RETAIL_ASSETS, resources=retail_resources(), instance=instance)
    assert result.success
    return SmallLake(home, home / "lake", instance)
