"""Every environment variable archlore reads, in one place (pydantic-settings).

`env()` reads the environment each time it is called (cheap), so a variable set by a test or by
a parent process is seen; modules receive values from here instead of calling `os.environ`.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Env(BaseSettings):
    """archlore's environment variables (all optional)."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    archlore_data: Path | None = Field(None, description="benchmark data dir (nb201/, transnas101/); else ../shared/data")
    archlore_runs: Path | None = Field(None, description="where runs live; else ./runs")
    archlore_storage: str | None = Field(None, description="shared run storage: sqlite:///FILE.db or postgresql://...; else a folder per run")
    archlore_memory: str | None = Field(None, description="principle memory: a folder or http://HOST:PORT")
    archlore_cache: Path | None = Field(None, description="cache root (the local model); else ~/.cache/archlore")
    archlore_llm_threads: int = Field(1, ge=0, description="llama.cpp threads for --llm local (0: all cores)")
    archlore_llm_model: str | None = Field(None, description="--llm local's model: 1.5b (default) or 0.5b (Qwen2.5-Coder GGUF)")
    archlore_train_threads: int = Field(1, ge=0, description="torch threads for --executor train (0: torch's default)")
    archlore_train_cache: str | None = Field(
        None, description="training cache file (off: none); else $ARCHLORE_CACHE/train-cache.db or ~/.cache/archlore/train-cache.db"
    )
    archlore_train_concurrency: int = Field(1, ge=1, description="candidates trained at once by the training executor")
    archlore_embed_device: str | None = Field(None, description="device for the MiniLM embedding (e.g. cuda)")
    archlore_embed_backend: str | None = Field(None, description="numpy | sentence-transformers")
    openai_api_key: str | None = Field(None, description="key for --llm openai:MODEL")
    openai_base_url: str | None = Field(None, description="base URL for --llm openai:MODEL without @URL")


def env() -> Env:
    """The current environment, validated (a malformed value is a one-line ConfigError)."""
    from pydantic import ValidationError

    from .errors import ConfigError

    try:
        return Env()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "?"
        raise ConfigError(f"environment variable {name} is invalid: {first['msg']}") from None
