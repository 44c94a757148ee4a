"""Typed settings of the supplier simulator, read from `DROPSHIP_SIMULATOR_*` variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, AnyHttpUrl, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_TRACKING_SECRET = "dev-tracking-secret"  # noqa: S105 - the documented development default


class SimulatorSettings(BaseSettings):
    """Process-wide settings; per-supplier behaviour is steered at runtime via `/_control`.

    The simulator keeps its state in memory (written through to `state_dir` when set): run
    it as a single process (one uvicorn worker).
    """

    model_config = SettingsConfigDict(
        env_prefix="DROPSHIP_SIMULATOR_", extra="ignore", populate_by_name=True
    )

    host: str = "127.0.0.1"
    port: int = Field(8010, ge=1, le=65535)
    seed: int | None = None
    """Base seed: each supplier draws from `Random(f"{seed}:{supplier_key}")`; unset = random."""

    state_dir: Path | None = Field(
        None, validation_alias=AliasChoices("DROPSHIP_SIMULATOR_STATE_DIR", "DROPSHIP_DATA_DIR")
    )
    """Where its orders are kept across restarts (`supplier-simulator.db`); unset: memory only."""

    tracking_url: AnyHttpUrl = AnyHttpUrl("http://127.0.0.1:8002/v1/webhooks/tracking")
    """Where carrier tracking updates (in transit, delivered) are POSTed."""
    tracking_secret: SecretStr = Field(
        SecretStr(DEV_TRACKING_SECRET), validation_alias="DROPSHIP_TRACKING_SECRET"
    )

    decision_delay_s: float = Field(0.05, ge=0)
    """Time between answering 202 and calling back with the decision."""
    callback_timeout_s: float = Field(5.0, gt=0)
    callback_max_attempts: int = Field(8, ge=1)
    callback_backoff_s: float = Field(0.25, ge=0)
    callback_backoff_max_s: float = Field(5.0, ge=0)

    log_level: str = Field(
        "INFO", validation_alias=AliasChoices("DROPSHIP_SIMULATOR_LOG_LEVEL", "DROPSHIP_LOG_LEVEL")
    )
    log_json: bool = Field(
        True, validation_alias=AliasChoices("DROPSHIP_SIMULATOR_LOG_JSON", "DROPSHIP_LOG_JSON")
    )
