"""toolkit_logging: connection and message logging for ws-toolkit, on stdlib ``logging``.

One INFO record when a connection opens and one when it ends, with structured ``ws_*`` fields;
per-message records at DEBUG. Credentials are redacted and control characters escaped.
``RedactingFilter`` does the same for any logger's records (the server's and its libraries').
See docs/logging.md.
"""

from ._filter import RedactingFilter
from ._logger import DEFAULT_REDACT_HEADERS, DEFAULT_REDACT_KEYS, REDACTED, ConnectionLogger

__all__ = ["DEFAULT_REDACT_HEADERS", "DEFAULT_REDACT_KEYS", "REDACTED", "ConnectionLogger", "RedactingFilter"]
