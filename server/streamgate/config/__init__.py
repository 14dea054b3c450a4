"""The gateway's configuration: pydantic models, read from YAML or TOML, with env overrides.

    config = load_config("gateway.yaml")   # or None: defaults (the embedded engine) + env

The file format follows the extension (`.yaml`/`.yml` or `.toml`). Environment variables named
`STREAMGATE_<SECTION>__<KEY>...` override the file (`STREAMGATE_LISTEN__PORT=50052`,
`STREAMGATE_BACKENDS__0__URL=http://h:80`; see `environment`). Every problem is reported at once
as a `ConfigError` naming the path of each bad field (`backends[1].url: ...`) and, for
overrides, the variable that set it.

One module per section (listen, backends, routing, tenancy, admission, cache, limits, telemetry,
embedded), `gateway` for the whole, `base` for what they share; `loading` assembles the sources
(`file`, `environment`) with pydantic-settings. Import the names from here.
"""

from streamgate.config.admission import AdmissionConfig
from streamgate.config.backends import BackendConfig, CircuitConfig
from streamgate.config.base import ConfigError
from streamgate.config.cache import CacheConfig, RedisConfig
from streamgate.config.embedded import EMBEDDED_BACKEND, EmbeddedConfig
from streamgate.config.environment import ENV_PREFIX
from streamgate.config.gateway import GatewayConfig
from streamgate.config.limits import LimitsConfig
from streamgate.config.listen import KeepaliveConfig, ListenConfig, TLSConfig
from streamgate.config.loading import load_config
from streamgate.config.routing import (
    ConditionConfig,
    PickerName,
    PoolConfig,
    PrefixConfig,
    RouteConfig,
    RuleConfig,
    SplitArm,
)
from streamgate.config.telemetry import LoggingConfig, MetricsConfig
from streamgate.config.tenancy import (
    ApiKeyConfig,
    AuthConfig,
    KeyFileEntry,
    QuotaConfig,
    TenantConfig,
)

__all__ = [
    "EMBEDDED_BACKEND",
    "ENV_PREFIX",
    "AdmissionConfig",
    "ApiKeyConfig",
    "AuthConfig",
    "BackendConfig",
    "CacheConfig",
    "CircuitConfig",
    "ConditionConfig",
    "ConfigError",
    "EmbeddedConfig",
    "GatewayConfig",
    "KeepaliveConfig",
    "KeyFileEntry",
    "LimitsConfig",
    "ListenConfig",
    "LoggingConfig",
    "MetricsConfig",
    "PickerName",
    "PoolConfig",
    "PrefixConfig",
    "QuotaConfig",
    "RedisConfig",
    "RouteConfig",
    "RuleConfig",
    "SplitArm",
    "TLSConfig",
    "TenantConfig",
    "load_config",
]
