"""Keep capabilities out of logs: a session id in a URL path is as good as a key for keyless
calls, so access-log lines show only its first eight characters (enough to correlate)."""

from __future__ import annotations

import logging
import re

__all__ = ["SessionIdRedactor", "install_redaction"]

_SESSION_IN_PATH = re.compile(r"(/audio_sessions/)([A-Za-z0-9_-]{8})[A-Za-z0-9_-]+")
_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web")


class SessionIdRedactor(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SESSION_IN_PATH.sub(r"\1\2…", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def install_redaction() -> None:
    """Idempotent: attach the filter to aiohttp's loggers once."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, SessionIdRedactor) for f in logger.filters):
            logger.addFilter(SessionIdRedactor())
