"""The DICOMweb connection type: a connection as users create it (UI form, URI, JSON) becomes the
client the exports use, with its credentials, headers, timeout and TLS settings."""

from __future__ import annotations

import json
import sys
import types

import pytest

from airflow_provider_dicom.get_provider_info import DICOMWEB_CONN_FIELDS, get_provider_info
from airflow_provider_dicom.hooks.dicomweb import DicomWebHook, connection_base_url
from airflow_provider_dicom.utils.clients import dicomweb_client


def _connection(monkeypatch, conn_id: str, **fields) -> None:
    """A connection the way a deployment's secrets backend or environment holds it."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_provider_info_registers_the_connection_type_and_its_form():
    info = get_provider_info()
    (entry,) = [c for c in info["connection-types"] if c["connection-type"] == "dicomweb"]
    assert entry["hook-class-name"] == "airflow_provider_dicom.hooks.dicomweb.DicomWebHook"
    assert entry["hook-name"] == "DICOMweb"
    assert set(entry["conn-fields"]) == {"token", "timeout", "verify", "ca_bundle"}
    assert entry["conn-fields"]["token"]["schema"]["format"] == "password"  # masked in the form
    assert entry["ui-field-behaviour"]["relabeling"]["host"] == "DICOMweb base URL"
    modules = [m for hook in info["hooks"] for m in hook["python-modules"]]
    assert "airflow_provider_dicom.hooks.dicomweb" in modules


def test_providers_manager_offers_the_connection_type_with_its_form():
    """What `airflow providers hooks` lists and the connection form is built from."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    hook = manager.hooks["dicomweb"]
    assert hook.hook_class_name == "airflow_provider_dicom.hooks.dicomweb.DicomWebHook"
    assert hook.connection_id_attribute_name == "dicomweb_conn_id"
    assert hook.hook_name == "DICOMweb"
    assert {f"extra__dicomweb__{name}" for name in DICOMWEB_CONN_FIELDS} <= set(manager.connection_form_widgets)
    assert manager.connection_form_widgets["extra__dicomweb__token"].is_sensitive
    behaviour = manager.field_behaviours["dicomweb"]
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["placeholders"]["host"] == "https://pacs.example.org/dicom-web"


def test_a_dicomweb_connection_from_the_form_becomes_auth_headers_timeout_and_tls(monkeypatch):
    _connection(
        monkeypatch, "pacs", conn_type="dicomweb", host="https://pacs.example.org/dicom-web",
        login="reader", password="s3cret",
        extra={"timeout": 45, "verify": True, "ca_bundle": "/etc/ssl/pacs-ca.pem", "X-Api-Key": "k1", "token": ""},
    )
    client = DicomWebHook(dicomweb_conn_id="pacs").get_conn()
    assert client.base_url == "https://pacs.example.org/dicom-web"
    assert client.session.auth == ("reader", "s3cret")
    assert client.session.headers["X-Api-Key"] == "k1"
    assert "Authorization" not in client.session.headers  # an empty form field is no token
    assert client.timeout == (10.0, 45.0)
    assert client.session.verify == "/etc/ssl/pacs-ca.pem"


def test_a_bearer_token_and_no_tls_verification(monkeypatch):
    # Older forms stored the fields with the extra__dicomweb__ prefix: read the same.
    _connection(
        monkeypatch, "pacs", conn_type="dicomweb", host="pacs.example.org",
        extra={"extra__dicomweb__token": "abc.def", "extra__dicomweb__verify": False, "extra__dicomweb__ca_bundle": "/x"},
    )
    client = DicomWebHook(dicomweb_conn_id="pacs", base_url="https://other.example.org/wado").get_conn()
    assert client.base_url == "https://other.example.org/wado"  # the operator's source URL wins
    assert client.session.auth is None
    assert client.session.headers["Authorization"] == "Bearer abc.def"
    assert client.session.verify is False


def test_the_operators_build_their_client_through_the_hook_with_an_http_connection_as_before(monkeypatch):
    """dicomweb_conn_id took an HTTP connection before the DICOMweb type existed: unchanged."""
    _connection(
        monkeypatch, "legacy", conn_type="http", host="ignored.example.org", login="u", password="p",
        extra={"token": "a header here", "timeout": "20", "verify": "false"},
    )
    calls = []
    real = DicomWebHook.get_conn
    monkeypatch.setattr(DicomWebHook, "get_conn", lambda self: calls.append(self.dicomweb_conn_id) or real(self))
    client = dicomweb_client("https://pacs.example.org/dicom-web", "legacy", 8)
    assert calls == ["legacy"]
    assert client.base_url == "https://pacs.example.org/dicom-web"
    assert client.session.auth == ("u", "p")
    assert client.session.headers["token"] == "a header here"
    assert client.timeout == (10.0, 20.0)
    assert client.session.verify is False
    anonymous = dicomweb_client("https://pacs.example.org/dicom-web", None, 8)
    assert anonymous.session.auth is None and "Authorization" not in anonymous.session.headers


def test_a_connection_uri_keeps_its_port_and_path(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_ORTHANC", "dicomweb://orthanc:pw@127.0.0.1:8042/dicom-web")
    client = DicomWebHook(dicomweb_conn_id="orthanc").get_conn()
    assert client.base_url == "https://127.0.0.1:8042/dicom-web"
    assert client.session.auth == ("orthanc", "pw")


@pytest.mark.parametrize(
    ("host", "port", "path", "url"),
    [
        ("http://127.0.0.1:8042/dicom-web/", None, None, "http://127.0.0.1:8042/dicom-web"),
        ("pacs.example.org", 443, "wado", "https://pacs.example.org:443/wado"),
        ("https://pacs.example.org/dicom-web", 8443, "ignored", "https://pacs.example.org:8443/dicom-web"),
        ("", None, None, None),
    ],
)
def test_the_base_url_of_a_connection(host, port, path, url):
    assert connection_base_url(host, port, path) == url


def test_wrong_settings_are_named_with_the_connection(monkeypatch):
    _connection(monkeypatch, "pacs", conn_type="dicomweb", host="https://pacs.example.org", extra={"timeout": "soon"})
    with pytest.raises(ValueError, match="connection 'pacs': extra 'timeout' must be a number of seconds"):
        DicomWebHook(dicomweb_conn_id="pacs").get_conn()
    _connection(monkeypatch, "nohost", conn_type="dicomweb")
    with pytest.raises(ValueError, match="connection 'nohost' has no host"):
        DicomWebHook(dicomweb_conn_id="nohost").get_conn()
    with pytest.raises(ValueError, match="needs a base_url or a dicomweb_conn_id"):
        DicomWebHook(dicomweb_conn_id=None).get_conn()


def test_test_connection_asks_for_one_study(monkeypatch):
    _connection(monkeypatch, "pacs", conn_type="dicomweb", host="https://pacs.example.org/dicom-web")
    asked = []

    class Answer:
        status_code, reason, content, headers = 200, "OK", b"[]", {}

    def fake_get(self, url, params=None, timeout=None):
        asked.append((url, params))
        return Answer()

    monkeypatch.setattr("requests.Session.get", fake_get)
    assert DicomWebHook(dicomweb_conn_id="pacs").test_connection() == (
        True, "QIDO-RS answered at https://pacs.example.org/dicom-web"
    )
    assert asked == [("https://pacs.example.org/dicom-web/studies", {"limit": 1})]
    Answer.status_code, Answer.reason = 401, "Unauthorized"
    ok, message = DicomWebHook(dicomweb_conn_id="pacs").test_connection()
    assert not ok and "HTTP 401" in message


def test_older_airflow_builds_the_same_form_from_the_hook(monkeypatch):
    """Airflow < 3.2 calls get_connection_form_widgets() with wtforms and Flask-AppBuilder (not
    installed here: stand-ins record what the hook asks for) and get_ui_field_behaviour()."""

    def field(kind):
        return lambda label, **kwargs: (kind, label, kwargs.get("default"))

    stubs = {
        "wtforms": types.SimpleNamespace(
            BooleanField=field("boolean"), IntegerField=field("integer"),
            PasswordField=field("password"), StringField=field("string"),
        ),
        "flask_appbuilder": types.ModuleType("flask_appbuilder"),
        "flask_appbuilder.fieldwidgets": types.SimpleNamespace(
            BS3PasswordFieldWidget=lambda: None, BS3TextFieldWidget=lambda: None
        ),
        "flask_babel": types.SimpleNamespace(lazy_gettext=str),
    }
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    widgets = DicomWebHook.get_connection_form_widgets()
    assert widgets == {
        "token": ("password", DICOMWEB_CONN_FIELDS["token"]["label"], None),
        "timeout": ("integer", DICOMWEB_CONN_FIELDS["timeout"]["label"], None),
        "verify": ("boolean", DICOMWEB_CONN_FIELDS["verify"]["label"], True),
        "ca_bundle": ("string", DICOMWEB_CONN_FIELDS["ca_bundle"]["label"], None),
    }
    behaviour = DicomWebHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["relabeling"]["host"] == "DICOMweb base URL"
