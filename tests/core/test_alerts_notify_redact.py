"""The webhook URL is scrubbed from log records whole, even when earlier webhook URLs (still
remembered by the redactor) are the start of it."""
from __future__ import annotations

import logging

from app.alerts.notify import _Redactor

SECRET_URL = "http://127.0.0.1:40000/hooks/T000/S3CR3T"


def test_a_url_that_starts_like_older_ones_is_scrubbed_whole() -> None:
    redactor = _Redactor()
    # Earlier webhooks on the same port ("…/hook", "…/hooks/T0"...): a set keeps no order, so the
    # many prefixes make it all but certain that one is tried before the whole URL.
    for end in range(len("http://127.0.0.1:40000/"), len(SECRET_URL)):
        redactor.add(SECRET_URL[:end])
    redactor.add(SECRET_URL)
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, 'HTTP Request: POST %s "HTTP/1.1 200 OK"',
                               (SECRET_URL,), None)
    redactor.filter(record)
    assert record.getMessage() == 'HTTP Request: POST <webhook URL> "HTTP/1.1 200 OK"'
