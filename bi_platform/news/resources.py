"""Resources of the news domain: the HF dataset repo."""

import dagster as dg

from bi_platform.news.dataset_repo import DatasetRepo, open_dataset_repo
from bi_platform.news.dataset_repo_hub import HubDatasetRepo
from bi_platform.settings import get_settings


class NewsDatasetRepoResource(dg.ConfigurableResource):
    """The news dataset repo: a local directory in the Hub's layout under
    ``$BI_PLATFORM_HOME/hf`` by default, the HuggingFace Hub when ``HF_REPO_ID`` (and
    ``HF_TOKEN``) are set. The token never reaches logs or metadata."""

    def open(self) -> DatasetRepo:
        return open_dataset_repo(get_settings())

    def describe(self, repo: DatasetRepo) -> str:
        """Where the repo is, for metadata (no secrets)."""
        if isinstance(repo, HubDatasetRepo):
            return f"hub:{repo.repo_id}"
        return f"local:{get_settings().hf_dir}"
