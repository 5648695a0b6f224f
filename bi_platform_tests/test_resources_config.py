"""The resources declare the configuration in use: when the code location loads, each
resource's config (what the Dagster UI's resource page shows) holds the values of the
settings in effect, and no secret."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bi_platform.cadastral.definitions import resources as cadastral_resources
from bi_platform.etl.definitions import resources as etl_resources
from bi_platform.news.definitions import resources as news_resources
from bi_platform.retail.definitions import resources as retail_resources
from bi_platform.settings import Settings

PASSWORD = "s3cret-pw-7f1c"
HF_TOKEN = "hf_token_9b2e"

#: Loads the code location and prints each resource's configured values as the UI gets
#: them (the repository snapshot the code server sends to the webserver).
DUMP = """
import json
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from bi_platform.definitions import defs
snap = RepositorySnap.from_def(defs.get_repository_def())
print(json.dumps({
    "values": {r.name: {k: json.loads(v) if isinstance(v, str) else str(v)
                        for k, v in r.configured_values.items()} for r in snap.resources},
    "serialized": [serialize_value(r) for r in snap.resources],
}))
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("resources_home")
    env = {
        **os.environ,
        "BI_PLATFORM_HOME": str(home),
        "DATABASE_URL": f"postgresql://app:{PASSWORD}@db.example:5432/bi",
        "HF_TOKEN": HF_TOKEN,
        "HF_REPO_ID": "acme/news",
        "ETL_MAX_FILE_MB": "7",
        "ETL_SAMPLE_SEED": "11",
        "POLARS_THRESHOLD_MB": "123",
        "FORCE_DASK": "true",
        "SPARK_DRIVER_MEMORY": "3g",
    }
    result = subprocess.run(
        [sys.executable, "-c", DUMP],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = json.loads(result.stdout.strip().splitlines()[-1])
    return {"home": home, **dumped}


def test_the_ui_shows_the_settings_in_effect(loaded: dict[str, Any]) -> None:
    home: Path = loaded["home"]
    values = loaded["values"]
    etl = values["etl"]
    assert etl["etl_dir"] == str(home / "etl")
    assert etl["max_file_mb"] == 7.0
    assert etl["sample_seed"] == 11
    assert etl["layout"] == "default"
    assert etl["timestamp_min"] == "2000-01-01T00:00:00+00:00"
    assert values["retail_exports"]["raw_dir"] == str(home / "raw" / "retail")
    lake = values["retail_io_manager"]
    assert lake["base_dir"] == str(home / "lake")
    assert lake["polars_threshold_mb"] == "123"
    assert lake["force_dask"] is True
    assert lake["validate_integrity"] is True
    assert values["news_repo"] == {
        "hf_repo_id": "acme/news",
        "hf_endpoint": None,
        "hf_dir": str(home / "hf"),
    }
    assert values["cadastral_delta_io_manager"]["base_dir"] == str(home / "delta")
    assert values["spark"]["driver_memory"] == "3g"
    assert values["warehouse_duckdb"]["database"] == str(home / "warehouse" / "bi_warehouse.duckdb")
    assert values["postgres"]["database_url"] is None
    assert values["postgres"]["max_size"] == 4


def test_no_secret_reaches_the_resource_config(loaded: dict[str, Any]) -> None:
    for serialized in loaded["serialized"]:
        assert PASSWORD not in serialized
        assert HF_TOKEN not in serialized


def test_from_settings_maps_every_field(tmp_path: Path) -> None:
    settings = Settings(
        bi_platform_home=tmp_path,
        etl_workers=3,
        etl_layouts_file=tmp_path / "layouts.json",
        dask_scheduler_address="tcp://dask:8786",
        spark_master="spark://m:7077",
        spark_total_cores=8,
    )
    etl = etl_resources(settings)["etl"]
    assert etl.workers == 3 and etl.layouts_file == str(tmp_path / "layouts.json")
    assert etl.root == tmp_path / "etl"
    retail = retail_resources(settings)
    assert retail["retail_io_manager"].dask_scheduler_address == "tcp://dask:8786"
    assert retail["retail_exports"].directory() == tmp_path / "raw" / "retail"
    spark = cadastral_resources(settings)["spark"]
    assert (spark.master, spark.total_cores) == ("spark://m:7077", 8)
    assert spark.settings().spark_master == "spark://m:7077"
    assert news_resources(settings)["news_repo"].local_dir() == str(tmp_path / "hf")


def test_unset_fields_are_read_when_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resource built without values (as tests do) follows the environment at use time."""
    from bi_platform.etl.resources import EtlResource
    from bi_platform.news.resources import NewsDatasetRepoResource

    monkeypatch.setenv("BI_PLATFORM_HOME", str(tmp_path))
    monkeypatch.setenv("ETL_SAMPLE_SEED", "5")
    assert EtlResource().root == tmp_path / "etl"
    assert EtlResource().seed == 5
    assert NewsDatasetRepoResource().local_dir() == str(tmp_path / "hf")
