"""Engine selection: the :class:`EngineConfig` flags, the Polars/Dask size threshold
(:func:`choose_engine`) and the process's ``distributed`` clients (:func:`dask_scheduler`).

Sizes are in MB of 2**20 bytes.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask

if TYPE_CHECKING:
    from distributed import Client

    from bi_platform.settings import Settings

MB = 1024 * 1024
GIB = 1024**3
DEFAULT_THRESHOLD_MB = 500.0


class Engine(StrEnum):
    """The dataframe engine that read or wrote a table."""

    POLARS = "polars"
    DASK = "dask"


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def auto_threshold_mb(available_bytes: int | None = None) -> float:
    """The ``auto`` threshold: 1000 MB with > 16 GiB RAM available, 200 with < 8 GiB,
    else 500. ``available_bytes`` defaults to ``psutil.virtual_memory().available``.

    Args:
        available_bytes: Available RAM in bytes (``None``: measured now).

    Returns:
        The threshold in MB.
    """
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    if available_bytes > 16 * GIB:
        return 1000.0
    if available_bytes < 8 * GIB:
        return 200.0
    return DEFAULT_THRESHOLD_MB


def _parse_threshold(value: str | float) -> float | None:
    """A threshold in MB, or None for ``auto``; raises ValueError when invalid."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return None
        try:
            number = float(text)
        except ValueError:
            raise ValueError(
                f"polars_threshold_mb must be a number of MB or 'auto', got {value!r}"
            ) from None
    else:
        number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError(f"polars_threshold_mb must be >= 0, got {value!r}")
    return number


@dataclass(frozen=True)
class EngineConfig:
    """How loads pick their engine (same fields as the env vars of the same name).

    ``polars_threshold_mb``: MB from which narwhals loads use Dask, or ``"auto"``.
    ``polars_enabled=False`` / ``force_dask=True``: narwhals loads always use Dask.
    ``validate_integrity``: check a Dask fallback's result against the Parquet footers.
    ``dask_scheduler_address``: run Dask on that ``distributed`` scheduler.
    ``verify_checksums``: before any read, decode every page of each file version not
    verified yet, checksums checked (:mod:`bi_platform.io_managers.integrity`);
    ``verified_cache_dir`` remembers the verified versions (None: verify every read).
    """

    polars_threshold_mb: str | float = "500"
    polars_enabled: bool = True
    force_dask: bool = False
    validate_integrity: bool = True
    dask_scheduler_address: str | None = None
    verify_checksums: bool = True
    verified_cache_dir: Path | None = None

    def __post_init__(self) -> None:
        _parse_threshold(self.polars_threshold_mb)

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> EngineConfig:
        """From :class:`bi_platform.settings.Settings` (default: the environment now).

        Args:
            settings: The settings to read (``None``: the environment now).

        Returns:
            The engine flags.
        """
        if settings is None:
            from bi_platform.settings import get_settings

            settings = get_settings()
        return cls(
            polars_threshold_mb=settings.polars_threshold_mb,
            polars_enabled=settings.polars_enabled,
            force_dask=settings.force_dask,
            validate_integrity=settings.validate_integrity,
            dask_scheduler_address=settings.dask_scheduler_address,
            verify_checksums=settings.verify_checksums,
            verified_cache_dir=settings.home_dir / "cache" / "parquet-verified",
        )

    def with_overrides(self, **overrides: Any) -> EngineConfig:
        """A copy with the given fields replaced; ``None`` values are ignored (unset).

        Args:
            **overrides: Field values by name.

        Returns:
            The new configuration.
        """
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @property
    def is_auto(self) -> bool:
        """The threshold is ``auto`` (resolved from available RAM at each load)."""
        return _parse_threshold(self.polars_threshold_mb) is None

    def threshold_mb(self, available_bytes: int | None = None) -> float:
        """The threshold in MB, resolving ``auto`` from available RAM.

        Args:
            available_bytes: Available RAM in bytes for ``auto`` (``None``: measured now).

        Returns:
            The threshold in MB.
        """
        number = _parse_threshold(self.polars_threshold_mb)
        return auto_threshold_mb(available_bytes) if number is None else number


def choose_engine(size_mb: float, config: EngineConfig) -> tuple[Engine, str]:
    """The engine for an engine-agnostic load of ``size_mb`` and a human reason.

    Args:
        size_mb: On-disk size of the data in MB.
        config: The engine flags.

    Returns:
        The engine and why it was chosen.
    """
    if config.force_dask:
        return Engine.DASK, "force_dask is true"
    if not config.polars_enabled:
        return Engine.DASK, "polars_enabled is false"
    threshold = config.threshold_mb()
    label = f"threshold {threshold:g} MB" + (" (auto)" if config.is_auto else "")
    if size_mb < threshold:
        return Engine.POLARS, f"{size_mb:.6g} MB < {label}"
    return Engine.DASK, f"{size_mb:.6g} MB >= {label}"


# --------------------------------------------------------------------------------------
# Dask cluster
# --------------------------------------------------------------------------------------
_clients: dict[str, Client] = {}
_clients_lock = threading.Lock()


def dask_client(address: str) -> Client:
    """A ``distributed.Client`` for ``address``, created once per process and reused.

    It becomes the process's default client, so lazy Dask frames returned by
    :func:`load_parquet` also compute on the cluster.

    Args:
        address: The ``distributed`` scheduler address.

    Returns:
        The running client for that address.
    """
    from distributed import Client

    with _clients_lock:
        client = _clients.get(address)
        if client is None or client.status not in ("running", "connecting", "newly-created"):
            client = Client(address, set_as_default=True)
            _clients[address] = client
        return client


def close_dask_clients() -> None:
    """Close the clients made by :func:`dask_client` (newest first)."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in reversed(clients):
        with contextlib.suppress(Exception):
            client.close()


@contextlib.contextmanager
def dask_scheduler(config: EngineConfig | None) -> Iterator[Client | None]:
    """Within the block Dask computes on ``config.dask_scheduler_address`` if set.

    Args:
        config: The engine flags (``None``: the default scheduler).

    Yields:
        The client in use, or ``None`` for Dask's default scheduler.
    """
    if config is None or not config.dask_scheduler_address:
        yield None
        return
    client = dask_client(config.dask_scheduler_address)
    with dask.config.set(scheduler=client):
        yield client
