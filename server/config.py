"""Settings: read once, from flags and ``TYMPAN_*`` environment variables, into a frozen object.

Nothing reads the environment at import time; ``Settings.from_env`` takes the mapping it should
read, so tests build settings from a dict. A bad value names the variable and what it got.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints
from urllib.parse import urlsplit

from server.storage.base import MAX_PRESIGN_EXPIRY_S
from server.storage.s3_config import (
    ADDRESSING_STYLES,
    DEFAULT_PART_BYTES,
    MAX_PART_BYTES,
    MIN_PART_BYTES,
    is_bucket_name,
)

__all__ = ["BLOB_STORES", "ENV_PREFIX", "ConfigError", "Settings"]

ENV_PREFIX = "TYMPAN_"
BLOB_STORES = ("local", "s3")
_BODY_OVERHEAD_BYTES = 64 * 1024


class ConfigError(ValueError):
    """A setting has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path("var")
    model_dir: Path | None = None  # None: the fetched weights under models/yamnet/weights
    provider: str | None = None  # None: best available (TensorRT, CUDA, CPU)
    model_variant: str = "auto"  # auto | w8a8 | w8a8-dyn | w8a8-u8 | fp32 | fp16
    intra_op_threads: int = 1
    # Cochl's Python SDK (cochl 1.0.13) uploads files in chunks of 5,000,000 bytes.
    max_chunk_bytes: int = 5 * 1024 * 1024
    fsync: bool = True
    status_wait_s: float = 10.0
    inactivity_timeout_s: float = 3600.0
    require_owner_key: bool = False
    max_batch_size: int = 16  # w8a8-dyn gains nothing past 16 on CPU (benchmarks/RESULTS.md)
    # The longest a window waits for company. 400 in-process streams, one run each:
    # 2 ms: mean batch 2.8-3.0, CPU 3.36-3.46x bare, p50 8-10 ms, p99 33-42 ms;
    # 5 ms: mean batch 5.5, CPU 3.24x, p50 11 ms, p99 35 ms; 10 ms: batch 10, 3.18x, p50 16.
    max_queue_delay_ms: float = 5.0
    inference_workers: int = 1
    # How long a thread may hold the GIL while another waits (Python's default is 5 ms). The
    # store and inference threads take the GIL back after every SQLite statement and model
    # run; behind a busy event loop each of those waits could cost up to the whole interval.
    # 400 in-process streams, paired runs: p99 102/163/114 ms at 5 ms, 78/125/76 ms at 1 ms.
    gil_switch_interval_ms: float = 1.0
    max_session_duration_s: float = 4 * 3600.0
    max_session_bytes: int = 8 * 1024**3
    audio_retention: str = "consumed"  # "consumed": delete audio inference is done with; "session"
    log_level: str = "INFO"
    # Limits against hostile or runaway clients (issue: hardening)
    max_sessions_per_key: int = 1000
    rate_limit_per_key: float = 2000.0  # requests per second per key; 0 turns it off
    rate_limit_burst: float = 4000.0
    max_json_bytes: int = 64 * 1024  # bodies other than chunk uploads
    max_json_depth: int = 32
    body_read_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    keepalive_timeout_s: float = 15.0
    max_connections: int = 4096
    overload_lag_s: float = 2.0  # refuse new sessions (429) when stream work lags this much
    cors_origins: str = ""  # comma-separated origins, or "*"; empty: CORS off
    tls_cert: Path | None = None
    tls_key: Path | None = None
    silence_gate_dbfs: float | None = None  # windows quieter than this skip the model
    # Server-Sent Events: a comment line this often on an idle feed (proxies close silent
    # connections, commonly after 30-60 s), and the reconnection delay told to browsers.
    sse_heartbeat_s: float = 15.0
    sse_retry_ms: int = 1000
    # Webhooks: each delivery is tried this many times, waiting base * 2^n (at most 5 min)
    # between tries, each try bounded by the timeout; at most this many deliveries at once.
    webhook_max_attempts: int = 8
    webhook_retry_base_s: float = 1.0
    webhook_timeout_s: float = 10.0
    webhook_concurrency: int = 64
    # Where uploaded media live (issue 14): "local", files under blob_dir (None: <data_dir>/blobs),
    # or "s3", one bucket of any S3-compatible service; clients then upload to the service
    # itself, through pre-signed URLs signed for s3_public_endpoint_url when it is set.
    blob_store: str = "local"
    blob_dir: Path | None = None
    s3_endpoint_url: str | None = None  # None: AWS's endpoint for s3_region
    s3_public_endpoint_url: str | None = None
    s3_bucket: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = field(default=None, repr=False)
    s3_addressing_style: str = "path"
    s3_part_bytes: int = DEFAULT_PART_BYTES  # memory per upload in flight
    # Media (issue 14): how long a pre-signed upload URL works, the largest upload it allows,
    # and how long an uploaded object is kept before the sweeper removes it.
    media_url_expiry_s: int = 3600
    # The address clients reach this server at (behind a reverse proxy: its public URL), for
    # the upload URLs the server signs; None: the address each request came to.
    public_url: str | None = None
    media_max_bytes: int = 1024**3
    media_retention_s: float = 48 * 3600.0
    # Jobs on media (issue 14): how long a finished job's output is kept, how long a worker's
    # lease on a running job lasts without renewal (a dead worker's job runs again after it),
    # and how many jobs run at once (their windows queue below live streams).
    job_output_retention_s: float = 24 * 3600.0
    job_lease_s: float = 60.0
    job_workers: int = 1
    max_unfinished_jobs_per_key: int = 1000  # 429 on POST /v1/sound-events beyond it

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``TYMPAN_<FIELD>`` variables, then explicit overrides (e.g. CLI flags)."""
        environ = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for spec in fields(cls):
            key = ENV_PREFIX + spec.name.upper()
            if key in environ:
                values[spec.name] = _coerce(key, environ[key], hints[spec.name])
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        for name in ("max_chunk_bytes", "max_batch_size", "intra_op_threads", "inference_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 < self.gil_switch_interval_ms <= 1000:
            raise ConfigError(
                f"gil_switch_interval_ms must be in (0, 1000], got {self.gil_switch_interval_ms}"
            )
        if self.audio_retention not in ("consumed", "session"):
            raise ConfigError(
                f"audio_retention must be 'consumed' or 'session', got {self.audio_retention!r}"
            )
        if not 0 < self.sse_heartbeat_s <= 3600:
            raise ConfigError(f"sse_heartbeat_s must be in (0, 3600], got {self.sse_heartbeat_s}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key must be given together")
        for name in (
            "max_sessions_per_key",
            "max_json_bytes",
            "max_json_depth",
            "max_connections",
            "webhook_max_attempts",
            "webhook_concurrency",
            "job_workers",
            "max_unfinished_jobs_per_key",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "status_wait_s",
            "inactivity_timeout_s",
            "max_queue_delay_ms",
            "rate_limit_per_key",
            "body_read_timeout_s",
            "header_timeout_s",
            "overload_lag_s",
            "sse_retry_ms",
            "webhook_retry_base_s",
            "webhook_timeout_s",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        self._validate_blob_store()
        self._validate_media()

    def _validate_media(self) -> None:
        if self.public_url is not None and (
            not self.public_url.startswith(("http://", "https://"))
            or not self.public_url.split("://", 1)[1].strip("/")
        ):
            raise ConfigError(
                f"{_env('public_url')} must be an http:// or https:// URL, got {self.public_url!r}"
            )
        if not 1 <= self.media_url_expiry_s <= MAX_PRESIGN_EXPIRY_S:
            raise ConfigError(
                f"{_env('media_url_expiry_s')} must be 1..{MAX_PRESIGN_EXPIRY_S} "
                f"(seconds; S3 signs for at most 7 days), got {self.media_url_expiry_s}"
            )
        if self.media_max_bytes < 1:
            raise ConfigError(
                f"{_env('media_max_bytes')} must be at least 1, got {self.media_max_bytes}"
            )
        for name in ("media_retention_s", "job_output_retention_s", "job_lease_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{_env(name)} must be positive, got {getattr(self, name)}")

    def _validate_blob_store(self) -> None:
        if self.blob_store not in BLOB_STORES:
            raise ConfigError(
                f"{_env('blob_store')} must be one of {', '.join(BLOB_STORES)}, "
                f"got {self.blob_store!r}"
            )
        if self.blob_store == "s3":
            for name in ("s3_bucket", "s3_region", "s3_access_key_id", "s3_secret_access_key"):
                if not getattr(self, name):
                    raise ConfigError(f"{_env(name)} is required when {_env('blob_store')}=s3")
        if self.s3_bucket is not None and not is_bucket_name(self.s3_bucket):
            raise ConfigError(
                f"{_env('s3_bucket')}={self.s3_bucket!r} is not a bucket name: 3-63 characters "
                "of a-z 0-9 . -, starting and ending with a letter or digit"
            )
        for name in ("s3_endpoint_url", "s3_public_endpoint_url"):
            url = getattr(self, name)
            if url is not None:
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise ConfigError(f"{_env(name)}={url!r} must be an http(s) URL with a host")
                if parts.path.strip("/") or parts.query or parts.fragment:
                    raise ConfigError(f"{_env(name)}={url!r} must have no path or query")
        if self.s3_addressing_style not in ADDRESSING_STYLES:
            raise ConfigError(
                f"{_env('s3_addressing_style')} must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"got {self.s3_addressing_style!r}"
            )
        if not MIN_PART_BYTES <= self.s3_part_bytes <= MAX_PART_BYTES:
            raise ConfigError(
                f"{_env('s3_part_bytes')} must be {MIN_PART_BYTES}..{MAX_PART_BYTES} "
                f"(S3's limits on a part), got {self.s3_part_bytes}"
            )

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def max_request_body_bytes(self) -> int:
        """The largest request body read: the base64 of a ``max_chunk_bytes`` chunk, even
        line-wrapped (a line break every 76 characters), plus room for the JSON around it."""
        base64_chars = 4 * -(-self.max_chunk_bytes // 3)
        return base64_chars + base64_chars // 38 + _BODY_OVERHEAD_BYTES

    @property
    def db_path(self) -> Path:
        return self.data_dir / "tympan.sqlite3"

    @property
    def blob_root(self) -> Path:
        return self.blob_dir if self.blob_dir is not None else self.data_dir / "blobs"


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, raw: str, hint: Any) -> Any:
    text = raw.strip()
    try:
        if hint is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError("expected true or false")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint == float | None:
            return float(text) if text else None
        if hint in (Path, Path | None):
            return Path(text) if text else None
        if hint in (str, str | None):
            return text or None
    except ValueError as exc:
        raise ConfigError(f"{key}={raw!r} is not valid: {exc}") from None
    raise ConfigError(f"{key}: unsupported setting type {hint}")
