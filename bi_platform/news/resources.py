"""Resources of the news domain: the HF dataset repo."""

import dagster as dg
from pydantic import Field

from bi_platform.news.dataset_repo import DatasetRepo, open_dataset_repo
from bi_platform.news.dataset_repo_hub import HubDatasetRepo
from bi_platform.settings import Settings, get_settings


class NewsDatasetRepoResource(dg.ConfigurableResource):
    """The news dataset repo: a local directory in the Hub's layout under ``hf_dir`` by
    default, the HuggingFace Hub when ``hf_repo_id`` is set.

    :meth:`from_settings` fills the fields from the settings in effect (``HF_REPO_ID``,
    ``HF_ENDPOINT``, ``BI_PLATFORM_HOME``); the definitions build the resource with it, so
    the Dagster UI shows the configuration in use. A field left unset (``None``) is read
    from the settings when used. The token is no field: it is read from ``HF_TOKEN`` when
    the repo opens and never reaches the UI, logs or metadata.
    """

    hf_repo_id: str | None = Field(
        default=None,
        description="owner/name of the Hub dataset repo (None: the local repo). From HF_REPO_ID.",
    )
    hf_endpoint: str | None = Field(
        default=None,
        description="Hub URL (None: https://huggingface.co). From HF_ENDPOINT.",
    )
    hf_dir: str | None = Field(
        default=None,
        description="Local repos and the Hub cache. From $BI_PLATFORM_HOME/hf.",
    )

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> "NewsDatasetRepoResource":
        """The resource with every field set from ``settings`` (default: the environment);
        ``HF_TOKEN`` stays in the environment."""
        settings = settings or get_settings()
        return cls(
            hf_repo_id=settings.hf_repo_id,
            hf_endpoint=settings.hf_endpoint,
            hf_dir=str(settings.hf_dir),
        )

    def settings(self) -> Settings:
        """The settings in effect with this resource's set fields on top."""
        settings = get_settings()
        overrides = {
            name: value
            for name, value in (
                ("hf_repo_id", self.hf_repo_id),
                ("hf_endpoint", self.hf_endpoint),
            )
            if value is not None
        }
        return settings.model_copy(update=overrides) if overrides else settings

    def local_dir(self) -> str:
        return self.hf_dir or str(get_settings().hf_dir)

    def open(self) -> DatasetRepo:
        return open_dataset_repo(self.settings(), hf_dir=self.local_dir())

    def describe(self, repo: DatasetRepo) -> str:
        """Where the repo is, for metadata (no secrets)."""
        if isinstance(repo, HubDatasetRepo):
            return f"hub:{repo.repo_id}"
        return f"local:{self.local_dir()}"
