"""The session-wide log audit in conftest.py really catches a credential, in the text or in extra fields."""

from __future__ import annotations

import logging

from tests.conftest import _LogAudit


def test_audit_catches_credentials_in_message_and_extra_fields() -> None:
    audit = _LogAudit()
    logger = logging.getLogger("tests.audit")
    logger.propagate = False
    logger.addHandler(audit)
    try:
        logger.warning("clean line")
        logger.warning("token=%s", "alice-token")
        logger.warning("structured", extra={"ws_query": "t=bob-token"})
        audit.paused = True
        logger.warning("paused: s3cret")
    finally:
        logger.removeHandler(audit)
        logger.propagate = True
    assert len(audit.leaks) == 2
    assert "'alice-token'" in audit.leaks[0]
    assert "'bob-token'" in audit.leaks[1]
