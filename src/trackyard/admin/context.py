"""What every admin handler shares: the store, the configuration, sessions, live counts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from trackyard.admin import service
from trackyard.admin.auth import SessionCodec
from trackyard.admin.live import ReceivedCounts
from trackyard.config import Config
from trackyard.store import Store
from trackyard.warehouse.registry import WarehouseConfig


def _nothing() -> None:
    return None


@dataclass
class AdminContext:
    store: Store
    config: Config
    sources_changed: Callable[[], None] = _nothing  # refresh the collection API's write keys
    codec: SessionCodec = field(init=False)
    received: ReceivedCounts = field(init=False)

    def __post_init__(self) -> None:
        self.codec = SessionCodec(service.session_key(self.store))
        self.received = ReceivedCounts(self.store)

    @property
    def builtin_warehouse(self) -> WarehouseConfig | None:
        """This process's own DuckDB warehouse, unless switched off."""
        return self.config.builtin_warehouse

    def public_url(self, request: Request) -> str:
        """Where SDKs reach this server: TRACKYARD_PUBLIC_URL, or the address the browser used."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"

    def secure_cookies(self, request: Request) -> bool:
        """Cookies are Secure whenever the web app is reached over https."""
        return request.url.scheme == "https" or self.public_url(request).startswith("https://")
