"""Delivery of alert events: a Slack-compatible webhook and e-mail over SMTP.

`notify(events, notifiers)` never raises into the loop: each channel's failure becomes a
`DeliveryResult` with the error text. Secrets (webhook URLs with tokens, SMTP credentials) are
read from environment variables named in the configuration, at send time, and never appear in
results or messages. `urllib` and `smtplib` are imported where they are used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, cast
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from mlops_loop.core.errors import InvalidConfigError, MlopsLoopError

if TYPE_CHECKING:
    # A type only: at run time notify needs nothing of the alerts package, which imports it.
    from mlops_loop.core.alerts.event import AlertEvent

Severity = Literal["warn", "error"]
_RANK = {"warn": 0, "error": 1}
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Slack refuses a message with more than 50 blocks or a section text over 3000 characters.
_MAX_BLOCKS = 50
_MAX_SECTION = 3000


class DeliveryError(MlopsLoopError, OSError):
    """A channel did not accept the events (unreachable, refused, misconfigured)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _no_inline_secrets(data: Any, secrets: dict[str, str]) -> Any:
    if isinstance(data, Mapping):
        for key, env_key in secrets.items():
            if key in data:
                raise ValueError(
                    f"{key!r} must not be written in the configuration: set {env_key!r} to the "
                    "name of an environment variable that holds it"
                )
    return data


class WebhookNotifierConfig(_Model):
    """A Slack-compatible incoming webhook (Slack, Mattermost, Rocket.Chat, a custom receiver)."""

    type: Literal["webhook"] = Field(description="Channel type.")
    url: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+",
        description="Endpoint URL without secrets; use `url_env` when the URL holds a token.",
    )
    url_env: str | None = Field(
        default=None,
        pattern=_ENV_NAME,
        description="Name of the environment variable holding the endpoint URL.",
    )
    timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds to wait for a reply.")
    min_severity: Severity = Field(default="warn", description="Least severity sent here.")
    name: str | None = Field(default=None, min_length=1, description="Name in delivery results.")

    @model_validator(mode="after")
    def _one_url(self) -> WebhookNotifierConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("a webhook needs exactly one of 'url' and 'url_env'")
        return self


class SmtpNotifierConfig(_Model):
    """E-mail through an SMTP relay; credentials come from environment variables."""

    type: Literal["smtp"] = Field(description="Channel type.")
    host: str = Field(min_length=1, description="SMTP server host.")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP server port.")
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", description="From address.")
    recipients: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(
        min_length=1, description="To addresses."
    )
    starttls: bool = Field(default=False, description="Upgrade the connection with STARTTLS.")
    username_env: str | None = Field(
        default=None, pattern=_ENV_NAME, description="Environment variable with the login name."
    )
    password_env: str | None = Field(
        default=None, pattern=_ENV_NAME, description="Environment variable with the password."
    )
    subject_prefix: str = Field(default="[mlops-loop]", description="Start of every subject.")
    timeout: float = Field(default=10.0, gt=0, le=300, description="Seconds per SMTP exchange.")
    min_severity: Severity = Field(default="warn", description="Least severity sent here.")
    name: str | None = Field(default=None, min_length=1, description="Name in delivery results.")

    @model_validator(mode="before")
    @classmethod
    def _secrets_by_name(cls, data: Any) -> Any:
        return _no_inline_secrets(data, {"password": "password_env", "username": "username_env"})

    @model_validator(mode="after")
    def _login_pair(self) -> SmtpNotifierConfig:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("'username_env' and 'password_env' go together: set both or neither")
        return self


NotifierConfig = Annotated[WebhookNotifierConfig | SmtpNotifierConfig, Field(discriminator="type")]
_NOTIFIER_ADAPTER: TypeAdapter[WebhookNotifierConfig | SmtpNotifierConfig] = TypeAdapter(
    NotifierConfig
)


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per pydantic error: dotted field path, message and offending value."""
    lines = []
    for err in error.errors():
        parts = [str(p) for p in err["loc"]]
        where = ".".join([prefix, *parts] if prefix else parts)
        got = err.get("input")
        shown = "" if isinstance(got, Mapping) else f" (got {got!r})"
        lines.append(f"  {where or '(top level)'}: {err['msg']}{shown}")
    return "\n".join(lines)


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to the events sent to one notifier."""

    notifier: str
    ok: bool
    events: int
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Notifier(Protocol):
    """A channel: `send` raises on failure; `notify` turns that into a result."""

    name: str
    min_severity: Severity

    def send(self, events: Sequence[AlertEvent]) -> None: ...


def _env(name: str, field: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise DeliveryError(f"environment variable {name!r} ({field}) is not set")
    return value


def _label(event: AlertEvent) -> str:
    return f"{event.kind.upper()} ({event.severity})"


def _summary(events: Sequence[AlertEvent]) -> str:
    if len(events) == 1:
        e = events[0]
        return f"{e.rule} {e.kind} ({e.severity}) on batch {e.batch}"
    firing = sum(e.kind == "firing" for e in events)
    parts = [f"{firing} firing"] if firing else []
    if len(events) - firing:
        parts.append(f"{len(events) - firing} resolved")
    return f"{len(events)} alerts: {', '.join(parts)}"


def _mrkdwn(text: str) -> str:
    # Slack's three control characters; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(events: Sequence[AlertEvent], title: str = "mlops-loop") -> dict[str, Any]:
    """The JSON body posted to a webhook: `text` (plain fallback) and Block Kit `blocks`."""
    head = f"{title}: {_summary(events)}"
    lines = [f"{_label(e)} {e.message} [batch {e.batch}]" for e in events]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(head)}*"}}
    ]
    room = _MAX_BLOCKS - 2  # the heading and a possible "more" line
    for e in events[:room]:
        text = f"*{_label(e)}* {_mrkdwn(e.message)}\nbatch `{_mrkdwn(e.batch)}`"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text[:_MAX_SECTION]}})
    if len(events) > room:
        more = f"... and {len(events) - room} more"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": more}]})
    return {"text": "\n".join([head, *lines]), "blocks": blocks}


class WebhookNotifier:
    """POSTs Slack-compatible JSON (`text` and `blocks`) to an incoming-webhook URL.

    Args:
        url: the endpoint; or None with `url_env`, the environment variable read at send time.
        timeout: seconds to wait for the reply.
        url_env: name of the environment variable holding the URL (for URLs with tokens).
        min_severity: events below it are not sent here.
        name: the name in delivery results; default `webhook:<host>`.

    Raises:
        InvalidConfigError: neither or both of `url` and `url_env`, or a URL that is not http(s).
    """

    def __init__(
        self,
        url: str | None = None,
        timeout: float = 10.0,
        *,
        url_env: str | None = None,
        min_severity: Severity = "warn",
        name: str | None = None,
    ) -> None:
        if (url is None) == (url_env is None):
            raise InvalidConfigError("WebhookNotifier needs exactly one of 'url' and 'url_env'")
        if url is not None:
            _check_url(url)
        self.url = url
        self.url_env = url_env
        self.timeout = timeout
        self.min_severity: Severity = min_severity
        self.name = name or (f"webhook:{urlsplit(url).hostname}" if url else f"webhook:${url_env}")

    def send(self, events: Sequence[AlertEvent]) -> None:
        """POST the events as one message.

        Raises:
            DeliveryError: the URL is unset or invalid, unreachable, or answered non-2xx.
        """
        import urllib.error
        import urllib.request

        url = self.url
        if url is None:
            assert self.url_env is not None
            url = _env(self.url_env, "url_env")
            _check_url(url, DeliveryError)
        where = _redacted(url)
        body = json.dumps(slack_payload(events)).encode("utf-8")
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "mlops-loop"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                status = reply.status
        except urllib.error.HTTPError as e:
            detail = e.read(300).decode("utf-8", "replace").strip()
            e.close()
            raise DeliveryError(f"{where} answered HTTP {e.code}: {detail or e.reason}") from e
        except urllib.error.URLError as e:
            raise DeliveryError(f"cannot reach {where}: {e.reason}") from e
        except TimeoutError as e:
            raise DeliveryError(f"{where} did not answer within {self.timeout} s") from e
        if not 200 <= status < 300:
            raise DeliveryError(f"{where} answered HTTP {status}")


def _check_url(url: str, error: type[Exception] = InvalidConfigError) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise error(f"webhook URL {_redacted(url)!r} is not an http(s) URL with a host")


def _redacted(url: str) -> str:
    """Scheme, host and port only: webhook paths and queries often carry the token."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def email_message(
    events: Sequence[AlertEvent], sender: str, recipients: Sequence[str], prefix: str
) -> Any:
    """The `email.message.EmailMessage` sent for `events` (plain text)."""
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["Subject"] = f"{prefix} {_summary(events)}".strip()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(domain="mlops-loop.invalid")
    paragraphs = []
    for e in events:
        facts = [
            f"  batch: {e.batch}",
            f"  rule: {e.rule} ({e.severity})",
            f"  metric: {e.metric} = {e.value:g}",
            f"  threshold: {e.threshold:g}",
        ]
        if e.baseline is not None:
            facts.append(f"  baseline: {e.baseline:g}")
        if e.time is not None:
            facts.append(f"  batch time: {e.time}")
        paragraphs.append("\n".join([f"{_label(e)} {e.message}", *facts]))
    message.set_content("\n\n".join(paragraphs) + "\n")
    return message


class SmtpNotifier:
    """Sends the events as one plain-text e-mail through an SMTP server.

    Args:
        host, port: the SMTP server.
        sender: the From address.
        recipients: the To addresses (at least one).
        starttls: upgrade the connection with STARTTLS before logging in.
        username_env, password_env: names of environment variables with the login, read at
            send time; both or neither.
        timeout: seconds per SMTP exchange.
        subject_prefix: start of every subject.
        min_severity: events below it are not sent here.
        name: the name in delivery results; default `smtp:<host>:<port>`.

    Raises:
        InvalidConfigError: no recipients, or only one of the two credential variables.
    """

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        recipients: Sequence[str],
        starttls: bool = False,
        username_env: str | None = None,
        password_env: str | None = None,
        *,
        timeout: float = 10.0,
        subject_prefix: str = "[mlops-loop]",
        min_severity: Severity = "warn",
        name: str | None = None,
    ) -> None:
        if not recipients:
            raise InvalidConfigError("SmtpNotifier needs at least one recipient")
        if (username_env is None) != (password_env is None):
            raise InvalidConfigError(
                "SmtpNotifier needs both username_env and password_env or neither"
            )
        self.host = host
        self.port = port
        self.sender = sender
        self.recipients = list(recipients)
        self.starttls = starttls
        self.username_env = username_env
        self.password_env = password_env
        self.timeout = timeout
        self.subject_prefix = subject_prefix
        self.min_severity: Severity = min_severity
        self.name = name or f"smtp:{host}:{port}"

    def send(self, events: Sequence[AlertEvent]) -> None:
        """Send one e-mail with every event.

        Raises:
            DeliveryError: a credential variable is unset, or some recipients were refused.
            smtplib.SMTPException, OSError: the server is unreachable or refused the message.
        """
        import smtplib
        import ssl

        login = None
        if self.username_env is not None and self.password_env is not None:
            login = (
                _env(self.username_env, "username_env"),
                _env(self.password_env, "password_env"),
            )
        message = email_message(events, self.sender, self.recipients, self.subject_prefix)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if login is not None:
                smtp.login(*login)
            refused = smtp.send_message(message)
        if refused:
            shown = ", ".join(
                f"{addr} ({code} {reply!r})" for addr, (code, reply) in refused.items()
            )
            raise DeliveryError(
                f"delivered to {len(self.recipients) - len(refused)} of {len(self.recipients)} "
                f"recipients; refused: {shown}"
            )


class NotifiersSection(Protocol):
    """What `build_notifiers` reads of a config section: its notifier configs (`AlertsConfig`)."""

    @property
    def notifiers(self) -> Sequence[WebhookNotifierConfig | SmtpNotifierConfig]: ...


def build_notifiers(
    config: NotifiersSection
    | Sequence[WebhookNotifierConfig | SmtpNotifierConfig | Mapping[str, Any]],
) -> list[Notifier]:
    """Notifiers from the `alerts` config section (or a list of notifier configs/mappings).

    Environment variables are not read here but at send time, so a missing secret shows up as
    a failed delivery, not as a crash of the step that builds the notifiers.

    Raises:
        InvalidConfigError: a notifier mapping is invalid (the message names the field).
    """
    # The section's notifier configs, or the sequence given.
    items = cast("Iterable[Any]", getattr(config, "notifiers", config))
    built: list[Notifier] = []
    for i, item in enumerate(items):
        if isinstance(item, Mapping):
            try:
                item = _NOTIFIER_ADAPTER.validate_python(item)
            except ValidationError as e:
                raise InvalidConfigError(
                    f"notifiers[{i}] is invalid:\n{describe_validation_error(e, f'notifiers[{i}]')}"
                ) from e
        if isinstance(item, WebhookNotifierConfig):
            built.append(
                WebhookNotifier(
                    item.url,
                    item.timeout,
                    url_env=item.url_env,
                    min_severity=item.min_severity,
                    name=item.name,
                )
            )
        elif isinstance(item, SmtpNotifierConfig):
            built.append(
                SmtpNotifier(
                    item.host,
                    item.port,
                    item.sender,
                    item.recipients,
                    item.starttls,
                    item.username_env,
                    item.password_env,
                    timeout=item.timeout,
                    subject_prefix=item.subject_prefix,
                    min_severity=item.min_severity,
                    name=item.name,
                )
            )
        else:
            raise InvalidConfigError(
                f"notifiers[{i}] is a {type(item).__name__}, expected a webhook or smtp config"
            )
    return built


def notify(events: Sequence[AlertEvent], notifiers: Sequence[Notifier]) -> list[DeliveryResult]:
    """Send `events` to every notifier; never raises.

    Each notifier receives one message with the events at or above its `min_severity`, or
    nothing when none qualify (`ok=True, events=0`). A failure (unreachable server, HTTP
    error, refused login, missing secret, a bug in a custom notifier) is caught and returned
    as `ok=False` with the error text, so the caller can log it and carry on.
    """
    results: list[DeliveryResult] = []
    for notifier in notifiers:
        name = str(getattr(notifier, "name", type(notifier).__name__))
        least = _RANK.get(str(getattr(notifier, "min_severity", "warn")), 0)
        chosen = [e for e in events if _RANK.get(e.severity, 1) >= least]
        if not chosen:
            results.append(DeliveryResult(name, True, 0))
            continue
        try:
            notifier.send(chosen)
        except Exception as e:  # one broken channel must not stop the loop or the others
            results.append(DeliveryResult(name, False, len(chosen), f"{type(e).__name__}: {e}"))
        else:
            results.append(DeliveryResult(name, True, len(chosen)))
    return results
