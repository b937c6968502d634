"""The DICOMweb connection type: where a DICOMweb server is and how to authenticate to it.

`DicomWebHook` is the one place a DICOMweb client is built from an Airflow connection: the export
operators' ``dicomweb_conn_id`` goes through it (`airflow_provider_dicom.utils.clients`), and DAG
authors can use it directly. Registered as connection type ``dicomweb`` ("DICOMweb" in the UI's
list), with a form whose fields are declared in `get_provider_info` (Airflow >= 3.2 reads them
from there; older versions call `get_connection_form_widgets` / `get_ui_field_behaviour` below).

What a connection means:

- ``host``: the server's DICOMweb base URL (``https://pacs.example.org/dicom-web``). A host
  without a scheme is ``https``; a connection URI's port and path
  (``dicomweb://user:pw@pacs:8042/dicom-web``) are kept. The operators' ``source`` URL wins over
  it: the DAG says which server, the connection how to get in.
- ``login`` / ``password``: HTTP basic authentication.
- the extra: any key is an HTTP header (``{"X-Api-Key": "..."}``), except the form's fields
  ``token`` (a bearer token, sent as ``Authorization: Bearer``), ``timeout`` (read timeout in
  seconds), ``verify`` (false: do not verify TLS) and ``ca_bundle`` (a CA bundle path to verify
  with). Keys with the ``extra__dicomweb__`` prefix of older forms are read as the same fields.

An ``http`` connection (what ``dicomweb_conn_id`` took before this type existed) keeps working:
login and password as above, every extra key a header except ``timeout`` and ``verify``.

Nothing heavy is imported at module level: requests and the engine's client load in `get_conn`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import BaseHook

from airflow_provider_dicom.get_provider_info import (
    DICOMWEB_CONN_FIELDS,
    DICOMWEB_CONN_TYPE,
    DICOMWEB_UI_FIELD_BEHAVIOUR,
)

if TYPE_CHECKING:
    from airflow_provider_dicom.sources.dicomweb import DicomWebClient

FIELD_PREFIX = f"extra__{DICOMWEB_CONN_TYPE}__"
DEFAULT_POOL_SIZE = 16  # as sources.remote.DEFAULT_WORKERS, without importing the engine at parse time


class DicomWebHook(BaseHook):
    """Builds the DICOMweb client (QIDO-RS / WADO-RS over one pooled session) for a connection.

    :param dicomweb_conn_id: the Airflow connection with the server's URL and credentials; None
        for an anonymous client of ``base_url`` (no connection is looked up).
    :param base_url: the DICOMweb base URL to read; default: the connection's host.
    :param pool_size: HTTP connections kept open to the server (the export's concurrency).
    """

    conn_name_attr = "dicomweb_conn_id"
    default_conn_name = "dicomweb_default"
    conn_type = DICOMWEB_CONN_TYPE
    hook_name = "DICOMweb"

    def __init__(
        self,
        dicomweb_conn_id: str | None = default_conn_name,
        base_url: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dicomweb_conn_id = dicomweb_conn_id
        self.base_url = base_url
        self.pool_size = pool_size

    def get_conn(self) -> DicomWebClient:
        """A new `DicomWebClient` with the connection's credentials, headers, timeout and TLS
        settings. Raises ValueError naming the connection when a setting is wrong or no URL is known."""
        from airflow_provider_dicom.sources.dicomweb import client_from_connection

        if self.dicomweb_conn_id is None:
            if not self.base_url:
                raise ValueError("DicomWebHook needs a base_url or a dicomweb_conn_id")
            return client_from_connection(self.base_url, pool_size=self.pool_size)
        conn = self.get_connection(self.dicomweb_conn_id)
        base_url = self.base_url or connection_base_url(conn.host, conn.port, conn.schema)
        if not base_url:
            raise ValueError(
                f"connection {self.dicomweb_conn_id!r} has no host: set the DICOMweb base URL as its host, "
                "or give the URL to the operator"
            )
        extra = dict(conn.extra_dejson or {})
        if conn.conn_type == DICOMWEB_CONN_TYPE:
            extra = form_fields_to_options(extra, self.dicomweb_conn_id)
        return client_from_connection(
            base_url, login=conn.login, password=conn.password, extra=extra,
            pool_size=self.pool_size, conn_id=self.dicomweb_conn_id,
        )

    def test_connection(self) -> tuple[bool, str]:
        """The UI's "Test" button: one QIDO-RS search for a single study."""
        try:
            client = self.get_conn()
            client.get_json(client.url("studies"), {"limit": 1})
        except Exception as exc:  # noqa: BLE001 - the UI shows the reason
            return False, str(exc)
        return True, f"QIDO-RS answered at {client.base_url}"

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The form's extra fields, for Airflow < 3.2 (newer versions read `conn-fields`)."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, PasswordField, StringField

        widgets: dict[str, Any] = {}
        for name, spec in DICOMWEB_CONN_FIELDS.items():
            schema = spec["schema"]
            label = lazy_gettext(spec["label"])
            kinds = set(schema["type"]) - {"null"}
            if "boolean" in kinds:
                widgets[name] = BooleanField(label, default=schema.get("default", False))
            elif "integer" in kinds:
                widgets[name] = IntegerField(label, widget=BS3TextFieldWidget())
            elif schema.get("format") == "password":
                widgets[name] = PasswordField(label, widget=BS3PasswordFieldWidget())
            else:
                widgets[name] = StringField(label, widget=BS3TextFieldWidget())
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden, relabelled and placeholder fields, for Airflow < 3.2 (newer versions read
        `ui-field-behaviour`)."""
        return {
            "hidden_fields": list(DICOMWEB_UI_FIELD_BEHAVIOUR["hidden-fields"]),  # type: ignore[call-overload]
            "relabeling": dict(DICOMWEB_UI_FIELD_BEHAVIOUR["relabeling"]),  # type: ignore[call-overload]
            "placeholders": dict(DICOMWEB_UI_FIELD_BEHAVIOUR["placeholders"]),  # type: ignore[call-overload]
        }


def connection_base_url(host: str | None, port: int | None, path: str | None) -> str | None:
    """The base URL a connection's host (a URL, or a bare host name), port and schema (a URI's
    path) name; None without a host."""
    if not host:
        return None
    host = host.strip().rstrip("/")
    if "://" not in host:
        host = f"https://{host}"
    parts = urlsplit(host)
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    url_path = parts.path or (f"/{path.strip('/')}" if path and path.strip("/") else "")
    return f"{parts.scheme}://{netloc}{url_path}"


def form_fields_to_options(extra: dict[str, Any], conn_id: str) -> dict[str, Any]:
    """A ``dicomweb`` connection's extra as `client_from_connection` takes it: the form's fields
    (prefixed or not; empty ones dropped) turned into headers and options, other keys kept as headers."""
    fields: dict[str, Any] = {}
    headers: dict[str, Any] = {}
    for key, value in extra.items():
        name = key.removeprefix(FIELD_PREFIX)
        if name in DICOMWEB_CONN_FIELDS:
            if value is not None and value != "":
                fields[name] = value
        else:
            headers[key] = value
    options = dict(headers)
    token = fields.get("token")
    if token is not None:
        if not isinstance(token, str):
            raise ValueError(f"connection {conn_id!r}: the bearer token must be text")
        options["Authorization"] = f"Bearer {token.strip()}"
    if "timeout" in fields:
        options["timeout"] = fields["timeout"]
    verify = fields.get("verify", True)
    if isinstance(verify, str):
        verify = verify.strip().lower() not in ("false", "0", "no", "off")
    if verify is False:
        options["verify"] = False
    elif "ca_bundle" in fields:
        options["verify"] = str(fields["ca_bundle"])
    return options
