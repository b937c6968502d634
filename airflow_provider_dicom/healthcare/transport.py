"""An httplib2 transport that never re-sends a request that is not idempotent.

httplib2 (under googleapiclient) retries at the connection level: when the connection drops
after a request was sent and before the status line arrived (`RemoteDisconnected`,
`BadStatusLine`), `Http._conn_request` reconnects and sends the request again, silently, once
more even with `httplib2.RETRIES = 1`. For `dicomStores.export` that is a second export: the
server did the work of the first request and lost only its answer. Nobody above the transport
ever sees it happen.

`forbid_resend(http)` changes an `httplib2.Http` (also inside a google-auth `AuthorizedHttp`) so
that POST and PATCH requests are sent exactly once, each on a fresh connection (a pooled one the
server closed while idle would fail the same way as a lost answer, and could not be told apart);
any failure after sending is raised for the caller to resolve (see
`HealthcareCalls.start_export`). GET, PUT, DELETE and HEAD keep httplib2's behaviour.
"""

from __future__ import annotations

from typing import Any

import httplib2

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})


class SendOnceHttp(httplib2.Http):
    """httplib2.Http whose non-idempotent requests go out once, on a new connection."""

    def _conn_request(self, conn, request_uri, method, body, headers):  # noqa: ANN001 - httplib2's signature
        if method.upper() in IDEMPOTENT_METHODS:
            return super()._conn_request(conn, request_uri, method, body, headers)
        conn.close()
        try:
            conn.connect()  # a refused connection raises here: nothing was sent
            conn.request(method, request_uri, body, headers)
            raw = conn.getresponse()
            content = raw.read()
        except BaseException:
            conn.close()
            raise
        response = httplib2.Response(raw)
        return response, _decompress(response, content, self)


def _decompress(response: Any, content: bytes, http: httplib2.Http) -> bytes:
    """httplib2's own gzip/deflate decoding, as `Http._conn_request` applies it. httplib2 0.32
    added decompression limits (`Http.limit_kwargs`, a third argument); older releases, such as
    the 0.31 of Composer's Airflow 3.1 image, take two arguments and have no such attribute."""
    limits = getattr(http, "limit_kwargs", None)
    if limits is None:
        return httplib2._decompressContent(response, content)
    return httplib2._decompressContent(response, content, limits)


def forbid_resend(http: Any) -> Any:
    """Make the `httplib2.Http` in `http` (itself, or the `.http` of an AuthorizedHttp) send
    non-idempotent requests once; returns `http`. Other transports are left alone."""
    inner = getattr(http, "http", http)
    if type(inner) is httplib2.Http:
        # Same state, one overridden method: swapping the class keeps what the builder set up
        # (timeout, proxy, certificates, the user-agent wrapper on the instance).
        inner.__class__ = SendOnceHttp
    return http
