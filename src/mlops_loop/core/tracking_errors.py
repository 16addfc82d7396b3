"""Failures of the tracking server, told without the credentials its URI may hold.

MLflow's REST client puts the full request URL, user and password included, into the
message of the exception it raises when a server cannot be reached, and chains the
transport's own exception to it. Everything that talks to MLflow goes through
`tracking_errors` (or a `GuardedClient`), which turns such a failure into a `TrackingError`
naming the redacted URI, raised `from None` so the original message is not chained into the
traceback, Dagster's event log or a terminal.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from mlops_loop.core.errors import MlopsLoopError, TrackingError

#: What the loop sets for MLflow's HTTP client when the user has not: a server that cannot be
#: reached or refuses fails in seconds instead of after MLflow's ~2 minutes of retries.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}

_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>()\[\]{},;]+")


def redact_uri(uri: str) -> str:
    """`uri` fit to show: a password in its user part and its query's values become `***`."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
    except ValueError:  # not a URL after all (e.g. an unbalanced "[")
        return uri
    out = uri
    if "@" in parts.netloc:
        user, host = parts.netloc.rsplit("@", 1)
        if ":" in user:
            out = out.replace(parts.netloc, f"{user.split(':', 1)[0]}:***@{host}", 1)
    if parts.query:
        query = "&".join(
            f"{pair.split('=', 1)[0]}=***" if "=" in pair else pair
            for pair in parts.query.split("&")
        )
        out = out.replace(f"?{parts.query}", f"?{query}", 1)
    return out


def _secrets_of(uri: str | None) -> list[str]:
    """The secret parts of `uri`: its password and its query's values."""
    from urllib.parse import unquote, urlsplit

    if not uri:
        return []
    try:
        parts = urlsplit(uri)
    except ValueError:
        return []
    found = [parts.password] if parts.password else []
    found += [pair.split("=", 1)[1] for pair in parts.query.split("&") if "=" in pair]
    # Short values ("1", "on") would blank out unrelated text; they guard nothing either.
    return [s for v in found for s in {v, unquote(v)} if len(s) >= 4]


def redact_text(text: str, uri: str | None = None) -> str:
    """`text` with every URL in it redacted (`redact_uri`), and the secret parts of `uri`
    blanked wherever else they appear."""
    out = _URL.sub(lambda m: redact_uri(m.group(0)), text)
    for secret in sorted(_secrets_of(uri), key=len, reverse=True):
        out = out.replace(secret, "***")
    return out


def bound_http_requests(uri: str) -> None:
    """Bound MLflow's HTTP retries and timeout for an http(s) `uri`, unless the user set them."""
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)


def _status_code(error: BaseException) -> int | None:
    """The HTTP status the server answered with, when the error tells it."""
    code = getattr(error, "error_code", None)
    if code == "UNAUTHENTICATED":
        return 401
    if code == "PERMISSION_DENIED":
        return 403
    found = re.search(
        r"failed with error code (\d{3})|too many (\d{3}) error responses", str(error)
    )
    return int(found.group(1) or found.group(2)) if found else None


def describe_failure(uri: str, error: BaseException) -> str | None:
    """What went wrong talking to the tracking store at `uri`, credentials redacted; None when
    `error` is no failure of the store's transport and shows no secret (e.g. "not found")."""
    from mlflow.exceptions import MlflowException

    text = str(error)
    shown = redact_uri(uri)
    if not isinstance(error, MlflowException):
        return None
    status = _status_code(error)
    if "failed with timeout exception" in text:
        timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        return (
            f"MLflow tracking server {shown} did not answer within {timeout} s "
            "(MLFLOW_HTTP_REQUEST_TIMEOUT)"
        )
    if status in (401, 403):
        return (
            f"MLflow tracking server {shown} refused the request (HTTP {status}): check "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or the token) and the "
            "user's permissions"
        )
    if status is not None and status >= 500:
        return f"MLflow tracking server {shown} failed (HTTP {status}); see the server's log"
    if "failed with exception" in text:
        reason = _transport_reason(text)
        return f"MLflow tracking server {shown} cannot be reached ({reason})"
    if redact_text(text, uri) != text:
        return f"MLflow at {shown}: {redact_text(text, uri)}"
    return None


def _transport_reason(text: str) -> str:
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"Name or service not known|nodename nor servname|getaddrinfo failed", "unknown host"),
        (r"timed out", "timed out"),
        (r"SSL|CERTIFICATE", "TLS error"),
        (r"Max retries exceeded", "gave up after MLFLOW_HTTP_REQUEST_MAX_RETRIES retries"),
    ):
        if re.search(pattern, text):
            return reason
    return "request failed"


@contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """Turn a failure of the tracking store at `uri` raised in the block into a `TrackingError`
    (`from None`: the original message, which may hold the URI's password, is not chained).

    Raises:
        TrackingError: the store cannot be reached, refused the request or failed.
    """
    bound_http_requests(uri)
    try:
        yield
    except MlopsLoopError:
        raise
    except Exception as e:
        message = describe_failure(uri, e)
        if message is None:
            raise
        raise TrackingError(message) from None


class GuardedClient:
    """An `MlflowClient` whose every call goes through `tracking_errors`."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client = client
        self._uri = uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with tracking_errors(self._uri):
                return attr(*args, **kwargs)

        return call


def mlflow_client(uri: str) -> GuardedClient:
    """An MLflow client for tracking and registry at `uri`, its failures told redacted."""
    from mlflow import MlflowClient

    bound_http_requests(uri)
    return GuardedClient(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)
