"""The one settings object. Every limit and tunable lives here; no other module hard-codes them.

Values come from the environment (prefix ``TICKGATE_``) or a ``.env`` file, so the same code runs the demo,
the tests and a production account. Dhan's own credentials keep Dhan's names (``DHAN_CLIENT_ID`` /
``DHAN_ACCESS_TOKEN``) and are held as secrets so they never print.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class FeedLimits(BaseModel, frozen=True):
    """Dhan's documented limits for one account on the live market feed (v2)."""

    sockets_per_account: int = Field(5, ge=1, description="Feed WebSocket connections per client id.")
    instruments_per_socket: int = Field(5000, ge=1, description="Instruments subscribed on one connection.")
    instruments_per_message: int = Field(100, ge=1, description="Instruments in one subscribe message.")

    @property
    def total_capacity(self) -> int:
        return self.sockets_per_account * self.instruments_per_socket


class MasterSettings(BaseModel, frozen=True):
    """Where the scrip master comes from and how strict loading it is (tickgate.instruments)."""

    url: str = Field(
        "https://images.dhan.co/api-data/api-scrip-master-detailed.csv",
        description="Dhan's detailed instrument master (refreshed daily).",
    )
    max_bad_row_fraction: float = Field(
        0.01, ge=0, le=1, description="Above this share of unreadable rows the whole file is rejected."
    )
    fetch_timeout_s: float = Field(60.0, gt=0, description="Per-read timeout of the master download.")
    keep_copies: int = Field(5, ge=1, description="Cached daily masters kept in <data_dir>/masters.")


class Settings(BaseSettings):
    """Everything tunable about a tickgate process."""

    model_config = SettingsConfigDict(
        env_prefix="TICKGATE_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    limits: FeedLimits = FeedLimits()
    master: MasterSettings = MasterSettings()

    feed_url: str = "wss://api-feed.dhan.co"
    dhan_client_id: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DHAN_CLIENT_ID", "TICKGATE_DHAN_CLIENT_ID")
    )
    dhan_access_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DHAN_ACCESS_TOKEN", "TICKGATE_DHAN_ACCESS_TOKEN")
    )

    data_dir: Path = Path.home() / ".local" / "share" / "tickgate"

    ltt_is_ist_wall_clock: bool = Field(
        True,
        description=(
            "Dhan's LTT field is reported to be IST wall-clock time encoded as if it were UTC epoch "
            "seconds. When true, ltt_to_datetime subtracts 5h30m to get the true instant."
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; tests build their own ``Settings``)."""
    return Settings()
