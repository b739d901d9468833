"""A real registry for tests: Debian's ``docker-registry`` on 127.0.0.1 with a free port.

Three flavours: anonymous, basic auth (htpasswd, bcrypt) and token auth, where a small
token server in this process issues ES256 JWTs signed by a throwaway CA the registry
trusts (the distribution token protocol: realm/service/scope, ``x5c`` header).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.tls import self_signed

BINARY = "/usr/bin/docker-registry"
_NO_VERIFY = __import__("ssl")._create_unverified_context()
SERVICE = "sycri-test-registry"
ISSUER = "sycri-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Signs registry tokens with a fresh EC key and a self-signed certificate."""

    def __init__(self, workdir: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sycri test token CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.bundle = workdir / "token-ca.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._der = self.cert.public_bytes(serialization.Encoding.DER)

    def token(self, subject: str, access: list[dict]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self._der).decode()]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + 600,
            "nbf": now - 60,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


@dataclass
class Registry:
    host: str  # 127.0.0.1:PORT
    workdir: Path
    auth: str = ""  # "", "basic" or "token"
    username: str = "sycri"
    password: str = field(default_factory=lambda: secrets.token_hex(8))
    refresh_token: str = field(default_factory=lambda: secrets.token_hex(12))
    proc: subprocess.Popen | None = None
    token_server: http.server.ThreadingHTTPServer | None = None
    token_requests: list[str] = field(default_factory=list)
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def blob_file(self, digest: str) -> Path:
        hexd = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def auth_header(self, repository: str, actions: str = "pull,push") -> dict[str, str]:
        """What a client with the right credentials sends (for pushing from tests)."""
        if self.auth == "basic":
            raw = f"{self.username}:{self.password}".encode()
            return {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        if self.auth == "token":
            assert self.token_server is not None
            port = self.token_server.server_address[1]
            q = urllib.parse.urlencode(
                {"service": SERVICE, "scope": f"repository:{repository}:{actions}"}
            )
            req = urllib.request.Request(f"http://127.0.0.1:{port}/token?{q}")
            raw = f"{self.username}:{self.password}".encode()
            req.add_header("Authorization", "Basic " + base64.b64encode(raw).decode())
            with urllib.request.urlopen(req, timeout=10) as r:
                return {"Authorization": "Bearer " + json.loads(r.read())["token"]}
        return {}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.token_server is not None:
            self.token_server.shutdown()
            self.token_server.server_close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _token_server(reg: Registry, issuer: TokenIssuer) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            params = urllib.parse.parse_qs(url.query)
            reg.token_requests.append(self.path)
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
                ok = user == reg.username and pw == reg.password
            if not ok:
                self._refuse()
                return
            access = _access(params.get("scope", []))
            self._answer({"token": issuer.token(reg.username, access)})

        def do_POST(self) -> None:
            """The OAuth2 refresh-token grant (docker's identity tokens)."""
            length = int(self.headers.get("Content-Length", "0"))
            form = urllib.parse.parse_qs(self.rfile.read(length).decode())
            reg.token_requests.append("POST " + " ".join(sorted(form)))
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [
                reg.refresh_token
            ]:
                self._refuse()
                return
            access = _access(form.get("scope", []))
            self._answer({"access_token": issuer.token(reg.username, access)})

        def _refuse(self) -> None:
            self.send_response(401)
            self.end_headers()

        def _answer(self, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _access(scopes: list[str]) -> list[dict]:
    """docker's token scopes (``repository:NAME:pull,push``) as the token's access claim."""
    out = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        out.append({"type": kind, "name": name, "actions": actions.split(",")})
    return out


def _htpasswd(user: str, password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))}\n"


def start(workdir: Path, auth: str = "", tls: bool = False) -> Registry:
    """Start a registry; raises (never skips) when the binary is missing or it fails."""
    if not os.access(BINARY, os.X_OK):
        raise RuntimeError(f"{BINARY} not found: apt-get install docker-registry")
    workdir.mkdir(parents=True, exist_ok=True)
    reg = Registry(host=f"127.0.0.1:{free_port()}", workdir=workdir, auth=auth)
    reg.storage.mkdir(exist_ok=True)
    conf = [
        "version: 0.1",
        "log: {level: warn, accesslog: {disabled: true}}",
        f"storage: {{filesystem: {{rootdirectory: {reg.storage}}}, delete: {{enabled: true}}}}",
    ]
    if tls:
        crt, pem = self_signed(workdir / "tls.crt", workdir / "tls.key")
        conf.append(f"http: {{addr: {reg.host}, tls: {{certificate: {crt}, key: {pem}}}}}")
        reg.scheme = "https"
    else:
        conf.append(f"http: {{addr: {reg.host}}}")
    if auth == "basic":
        (workdir / "htpasswd").write_text(_htpasswd(reg.username, reg.password))
        conf.append(f"auth: {{htpasswd: {{realm: sycri-test, path: {workdir / 'htpasswd'}}}}}")
    elif auth == "token":
        issuer = TokenIssuer(workdir)
        reg.token_server = _token_server(reg, issuer)
        port = reg.token_server.server_address[1]
        conf.append(
            f"auth: {{token: {{realm: 'http://127.0.0.1:{port}/token', service: {SERVICE}, "
            f"issuer: {ISSUER}, rootcertbundle: {issuer.bundle}}}}}"
        )
    (workdir / "config.yml").write_text("\n".join(conf) + "\n")
    log = open(workdir / "registry.log", "wb")  # noqa: SIM115 - lives as long as the process
    reg.proc = subprocess.Popen(
        [BINARY, "serve", str(workdir / "config.yml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            try:
                urllib.request.urlopen(reg.url + "/v2/", timeout=1, context=_NO_VERIFY).close()
                return reg
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return reg
        time.sleep(0.05)
    out = (workdir / "registry.log").read_text(errors="replace")[-2000:]
    reg.stop()
    raise RuntimeError(f"docker-registry did not start: {out}")


# -- pytest fixtures (imported by tests/conftest.py) ----------------------------------------

import pytest  # noqa: E402


def _fixture(auth: str, tls: bool = False):
    @pytest.fixture(scope="session")
    def fixture(tmp_path_factory):
        reg = start(tmp_path_factory.mktemp(f"registry-{auth or 'anon'}"), auth, tls)
        try:
            yield reg
        finally:
            reg.stop()

    return fixture


registry = _fixture("")
basic_registry = _fixture("basic")
token_registry = _fixture("token")
tls_registry = _fixture("", tls=True)
