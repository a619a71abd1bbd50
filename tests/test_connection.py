"""Connecting the way Temporal's own tools do: TEMPORAL_* variables, config-file profiles, TLS, mutual TLS,
API keys; stakeflow's own variables still win, and every client reports where each part came from.

The TLS tests put nghttpx (tests/tls_support.py) in front of the session's dev server: real TLS, a real
client-certificate check, and a log of the headers that reached it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from stakeflow.config import load_settings
from stakeflow.core.errors import ConfigError, ServiceError
from stakeflow.services import runs
from stakeflow.temporal.connection import connect, explain_failure
from tests.agent_script import agent, plan, think
from tests.fakes import FakeOpenAIServer
from tests.support import open_endpoint_env, spawn_worker, worker_env, worker_log
from tests.tls_support import NGHTTPX, TlsTerminator, make_pki

needs_nghttpx = pytest.mark.skipif(NGHTTPX is None, reason="nghttpx is missing (.ci/run installs nghttp2-proxy)")
API_KEY = "tmprl-apikey-test-0b9a8c7d6e"  # scanned for in every history (tests/test_histories_replay.py)
SERVER_NAME = "temporal.test"


def profile_file(tmp_path, text: str):
    path = tmp_path / "temporal.toml"
    path.write_text(text)
    return path


# --- where each part comes from ----------------------------------------------------------------


def test_precedence_field_by_field(tmp_path, monkeypatch):
    config = profile_file(
        tmp_path,
        """
[profile.default]
address = "profile-default:7233"
[profile.prod]
address = "profile-prod:7233"
namespace = "prod-ns"
[profile.prod.tls]
server_name = "prod.example"
""",
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text('temporal_profile = "prod"\ntemporal_namespace = "from-toml"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))

    s = load_settings()
    t = s.target
    assert (t.address, t.namespace, t.tls, t.server_name) == ("profile-prod:7233", "from-toml", True, "prod.example")
    assert t.origins["address"] == f"profile 'prod' of {config}"
    assert t.origins["namespace"] == str(home / "stakeflow.toml")  # stakeflow.toml beats the profile
    assert not s.manages_temporal and s.address == "profile-prod:7233" and s.temporal_namespace == "from-toml"

    monkeypatch.setenv("TEMPORAL_NAMESPACE", "from-temporal-env")  # Temporal's variable beats stakeflow.toml
    monkeypatch.setenv("TEMPORAL_ADDRESS", "temporal-env:7233")
    t = load_settings().target
    assert (t.address, t.namespace) == ("temporal-env:7233", "from-temporal-env")
    assert t.origins["address"] == "TEMPORAL_ADDRESS"

    monkeypatch.setenv("STAKEFLOW_TEMPORAL_ADDRESS", "stakeflow-env:7233")  # stakeflow's own variable wins
    monkeypatch.setenv("STAKEFLOW_TEMPORAL_PROFILE", "default")
    t = load_settings().target
    assert (t.address, t.origins["address"]) == ("stakeflow-env:7233", "STAKEFLOW_TEMPORAL_ADDRESS")
    assert t.profile == "default" and t.tls is False  # the default profile has no TLS


def test_nothing_configured_is_the_local_dev_server(tmp_path):
    s = load_settings()
    assert s.manages_temporal and s.target.local
    assert s.target.describe().startswith("127.0.0.1:7233, namespace default, plaintext")


def test_an_api_key_turns_tls_on_and_is_never_shown(monkeypatch):
    monkeypatch.setenv("TEMPORAL_ADDRESS", "ns.acct.tmprl.cloud:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "ns.acct")
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    s = load_settings()
    assert s.target.tls is True and s.target.api_key.get_secret_value() == API_KEY
    line = s.target.describe()
    assert "API key (not shown)" in line and "API key from TEMPORAL_API_KEY" in line
    assert API_KEY not in line and API_KEY not in repr(s) and API_KEY not in repr(s.target)
    monkeypatch.setenv("TEMPORAL_TLS", "false")  # explicitly off wins, as in Temporal's own tools
    assert load_settings().target.tls is False


@pytest.mark.parametrize(
    "toml,needle",
    [
        ('temporal_api_key = "x"\n', "'temporal_api_key' is a secret"),
        ('codec_keys = "a:b"\n', "'codec_keys' is a secret"),
        ('codec_auth_tokens = "t"\n', "'codec_auth_tokens' is a secret"),
    ],
)
def test_secrets_are_refused_in_stakeflow_toml(tmp_path, toml, needle):
    home = tmp_path / "home"
    home.mkdir()
    (home / "stakeflow.toml").write_text(toml)
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert needle in str(e.value) and "instead" in str(e.value)


def test_a_named_profile_that_does_not_exist_is_an_error_naming_the_file(tmp_path, monkeypatch):
    config = profile_file(tmp_path, '[profile.staging]\naddress = "s:7233"\n')
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
    monkeypatch.setenv("TEMPORAL_PROFILE", "prod")
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert f"Temporal profile 'prod' is not in {config} (profiles there: staging)" in str(e.value)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "there is no config file at" in str(e.value) and "temporal config set --profile prod" in str(e.value)


def test_unusable_tls_files_are_named_before_any_handshake(tmp_path, monkeypatch):
    pki = make_pki(tmp_path / "pki")
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(tmp_path / "missing.pem"))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pki.client_key))
    from stakeflow.temporal.connection import tls_config

    with pytest.raises(ConfigError) as e:
        tls_config(load_settings().target)
    assert f"cannot read the client certificate {tmp_path / 'missing.pem'} (from TEMPORAL_TLS_CLIENT_CERT_PATH" in str(
        e.value
    )
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(pki.client_key))  # a key where the certificate goes
    with pytest.raises(ConfigError) as e:
        tls_config(load_settings().target)
    assert f"the client certificate {pki.client_key} (from TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA) is not a PEM" in str(
        e.value
    )
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(pki.client_cert))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(pki.stranger_key))
    with pytest.raises(ConfigError) as e:
        tls_config(load_settings().target)
    assert (
        f"the client private key {pki.stranger_key} does not belong to the client certificate {pki.client_cert}"
        in str(e.value)
    )


# --- against real TLS ----------------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki", SERVER_NAME)


@pytest.fixture
def mtls(tmp_path, pki, client):
    with TlsTerminator(tmp_path, pki, client.service_client.config.target_host, require_client_cert=True) as t:
        yield t


def tls_env(pki, address: str, cert=None, key=None, ca=None) -> dict[str, str]:
    env = {
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(ca or pki.ca),
        "TEMPORAL_TLS_SERVER_NAME": SERVER_NAME,
    }
    if cert:
        env.update(TEMPORAL_TLS_CLIENT_CERT_PATH=str(cert), TEMPORAL_TLS_CLIENT_KEY_PATH=str(key))
    return env


@needs_nghttpx
async def test_a_run_over_mutual_tls_with_workers_and_doctor(tmp_path, pki, mtls, client, monkeypatch):
    """Client, a `stakeflow worker` process and `stakeflow doctor`, all through a terminator that requires our client certificate."""
    variables = tls_env(pki, mtls.address, pki.client_cert, pki.client_key)
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    prefix = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("STAKEFLOW_QUEUE_PREFIX", prefix)
    with FakeOpenAIServer(model="qwen-test") as open_fake:
        open_fake.script(agent(plan(("Think", None)), {1: think("thought")}, answer="over mTLS"))
        monkeypatch.setenv("STAKEFLOW_OPEN_BASE_URL", open_fake.url)
        monkeypatch.setenv("STAKEFLOW_OPEN_MODEL", "qwen-test")
        settings = load_settings()
        tls_client = await connect(settings)
        env = worker_env(
            tmp_path / "home",
            client,
            prefix,
            **variables,
            **open_endpoint_env(open_fake.url),
        )
        del env["STAKEFLOW_TEMPORAL_ADDRESS"]  # only Temporal's variables say where to go
        worker = spawn_worker(env)
        try:
            handle = await runs.start_run(tls_client, settings, runs.build_request(settings, "Think over mTLS"))
            result = await handle.result()
            doctor = subprocess.run(
                [sys.executable, "-m", "stakeflow", "doctor", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
        finally:
            worker.terminate()
            worker.wait(30)
    assert result.answer == "over mTLS"
    # The private key's contents reach no log and no history; only its path is ever named.
    key_body = pki.client_key.read_text().splitlines()[1]
    history = (await tls_client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert key_body not in worker_log(env) + doctor.stdout + doctor.stderr + history
    assert f"polling {prefix}-workflows" in worker_log(env) and f"client certificate {pki.client_cert}" in worker_log(
        env
    )
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    line = checks["temporal"]["detail"]
    assert checks["temporal"]["status"] == "ok", checks["temporal"]
    assert line.startswith(
        f"{mtls.address}, namespace default, TLS (CA {pki.ca}, client certificate {pki.client_cert}, "
        f"server name {SERVER_NAME})"
    )
    assert (
        "address from TEMPORAL_ADDRESS" in line
        and "client certificate from TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA" in line
    )
    assert checks["worker workflows"]["status"] == "ok"  # doctor saw the worker's poller through TLS too
    # The requests reached the server through the terminator.
    assert mtls.wait_for("StartWorkflowExecution") and mtls.wait_for("PollWorkflowTaskQueue")


@needs_nghttpx
@pytest.mark.parametrize("case", ["stranger", "none"])
async def test_a_client_certificate_the_server_refuses_is_named(tmp_path, pki, mtls, case, monkeypatch):
    cert, key = (pki.stranger_cert, pki.stranger_key) if case == "stranger" else (None, None)
    for k, v in tls_env(pki, mtls.address, cert, key).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ServiceError) as e:
        await connect(load_settings())
    text = str(e.value)
    assert f"Temporal at {mtls.address} (address from TEMPORAL_ADDRESS) refused the TLS handshake" in text
    if case == "stranger":
        assert (
            f"the server did not accept the client certificate {pki.stranger_cert} (from TEMPORAL_TLS_CLIENT_CERT_PATH/_DATA)"
            in text
        )
    else:
        assert "set TEMPORAL_TLS_CLIENT_CERT_PATH and TEMPORAL_TLS_CLIENT_KEY_PATH" in text
    # The CLI says the same in one line, exit 1, no traceback.
    out = subprocess.run(
        [sys.executable, "-m", "stakeflow", "status", "task-x"],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "refused the TLS handshake" in out.stderr and "Traceback" not in out.stderr


# What the SDK said, in runs against nghttpx requiring a client certificate that none was sent (TLS 1.3: the server
# refuses after the client's side of the handshake, so the first call meets it in whichever state the connection is).
REFUSED_AFTER_HANDSHAKE = [
    'hyper::Error(Io, Custom { kind: InvalidData, error: "received fatal alert: CertificateRequired" })',
    'hyper::Error(Canceled, "connection closed")',
    'hyper::Error(Canceled, "connection was not ready")',
    'hyper::Error(Io, Custom { kind: BrokenPipe, error: "stream closed because of a broken pipe" })',
]


@pytest.mark.parametrize("source", REFUSED_AFTER_HANDSHAKE)
def test_every_way_a_refused_client_certificate_surfaces_is_named(pki, source, monkeypatch):
    """One in about eight CLI connections met "connection was not ready" and was told to check the address."""
    for k, v in tls_env(pki, "127.0.0.1:7233").items():
        monkeypatch.setenv(k, v)
    status, message = (
        ("Cancelled", "operation was canceled") if "Canceled" in source else ("Unknown", "transport error")
    )
    sdk = (
        f"Failed client connect: `get_system_info` call error after connection: Status {{ code: {status}, message: "
        f'"{message}", source: Some(tonic::transport::Error(Transport, {source})) }}'
    )
    text = explain_failure(load_settings().target, RuntimeError(sdk))
    assert "refused the TLS handshake" in text and "set TEMPORAL_TLS_CLIENT_CERT_PATH" in text


def test_a_port_with_401_in_it_is_no_refused_credential(monkeypatch):
    """A CI run's server on port 40115 was down: "Connection refused" was named a refused API key, since "401" was
    found anywhere in the text (the port). A status code is a number of its own."""
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:40115")
    sdk = (
        "Failed client connect: Server connection error: tonic::transport::Error(Transport, ConnectError(ConnectError("
        '"tcp connect error", 127.0.0.1:40115, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })))'
    )
    text = explain_failure(load_settings().target, RuntimeError(sdk))
    assert text.startswith("cannot reach Temporal at 127.0.0.1:40115") and "credentials" not in text, text
    refused = explain_failure(load_settings().target, RuntimeError("status: 401 Unauthorized"))
    assert "refused the credentials" in refused


@needs_nghttpx
async def test_a_server_certificate_from_an_untrusted_ca_names_the_ca_file(pki, mtls, monkeypatch):
    for k, v in tls_env(pki, mtls.address, pki.client_cert, pki.client_key, ca=pki.other_ca).items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ServiceError) as e:
        await connect(load_settings())
    assert f"the server CA {pki.other_ca} (from TEMPORAL_TLS_SERVER_CA_CERT_PATH/_DATA) does not trust" in str(e.value)
    assert "UnknownIssuer" in str(e.value)


@needs_nghttpx
async def test_the_api_key_reaches_the_server_as_a_bearer_authorization_header(tmp_path, pki, client, monkeypatch):
    """The SDK sends ``authorization: Bearer <key>`` on every call (as Temporal Cloud expects); the
    terminator logs the header it received. Stakeflow itself never prints the key."""
    with TlsTerminator(tmp_path, pki, client.service_client.config.target_host) as proxy:
        for k, v in tls_env(pki, proxy.address).items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
        prefix = f"t{uuid.uuid4().hex[:8]}"
        monkeypatch.setenv("STAKEFLOW_QUEUE_PREFIX", prefix)
        settings = load_settings()
        keyed = await connect(settings)
        handle = await runs.start_run(keyed, settings, runs.build_request(settings, "A run started with an API key"))
        await handle.terminate("test")
        doctor = subprocess.run(
            [sys.executable, "-m", "stakeflow", "doctor"],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        starts = proxy.wait_for("WorkflowService/StartWorkflowExecution")
    assert starts and all(f"authorization=[Bearer {API_KEY}]" in line for line in starts)
    assert (
        f"{proxy.address}, namespace default, TLS (CA {pki.ca}, server name {SERVER_NAME}), API key (not shown)"
        in doctor.stdout
    )
    assert API_KEY not in doctor.stdout + doctor.stderr
