"""A real PACS for tests: Orthanc with its DICOMweb plugin on a free loopback port, and a proxy
in front of it that counts the bytes it passes and can fail on demand.

Orthanc comes from the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``.ci/run`` installs
them when it can); without them the tests that need it skip and say why.
"""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancDicomWeb.so", "/usr/lib/orthanc/libOrthancDicomWeb.so")


def orthanc_missing() -> str | None:
    """Why Orthanc with DICOMweb cannot run here (None when it can)."""
    if shutil.which("Orthanc") is None:
        return "Orthanc is not installed (Debian: apt-get install orthanc orthanc-dicomweb)"
    if not any(Path(p).exists() for p in PLUGIN_PLACES):
        return "Orthanc's DICOMweb plugin is not installed (Debian: apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: ``url`` (its DICOMweb root), ``rest`` (its REST root), credentials."""

    folder: Path
    port: int
    user: str
    password: str
    process: subprocess.Popen | None = None

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.rest}/dicom-web"

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        import base64

        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers={"Authorization": f"Basic {token}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def upload(self, path: Path) -> dict:
        status, body = self._request("POST", "/instances", path.read_bytes())
        assert status == 200, (status, body[:200])
        return json.loads(body)

    def get_json(self, path: str) -> object:
        status, body = self._request("GET", path)
        assert status == 200, (status, body[:200])
        return json.loads(body)

    def delete_study(self, study_uid: str) -> None:
        found = json.loads(self._request("POST", "/tools/lookup", study_uid.encode())[1])
        for item in found:
            if item.get("Type") == "Study":
                self._request("DELETE", item["Path"])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


PYTHON_PLUGIN_PLACES = ("/usr/share/orthanc/plugins/libOrthancPython.so", "/usr/lib/orthanc/libOrthancPython.so")


def python_plugin() -> str | None:
    """Orthanc's Python plugin (Debian: orthanc-python), or None."""
    return next((p for p in PYTHON_PLUGIN_PLACES if Path(p).exists()), None)


def start_orthanc(folder: Path, *, plugins: tuple[str, ...] = (), config: dict | None = None,
                  env: dict[str, str] | None = None, password: str | None = None) -> Orthanc:
    """Start Orthanc on a free loopback port with storage in ``folder``, authentication on (user
    ``echoclip``, ``password`` or a random one); ``plugins`` and ``config`` add to its
    configuration, ``env`` is its environment."""
    folder.mkdir(parents=True, exist_ok=True)
    plugin = next(p for p in PLUGIN_PLACES if Path(p).exists())
    server = Orthanc(folder, free_port(), "echoclip", password or secrets.token_hex(8))
    config = {
        "Name": "echoclip-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": server.port, "DicomServerEnabled": False, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True, "RegisteredUsers": {server.user: server.password},
        "Plugins": [plugin, *plugins], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1,
        "HttpCompressionEnabled": False, **(config or {}),
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - open while Orthanc runs
    server.process = subprocess.Popen(["Orthanc", str(folder / "orthanc.json")], stdout=log, stderr=log, env=env)
    deadline = time.time() + 30
    while time.time() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-800:]}")
        try:
            if server._request("GET", "/system")[0] == 200:
                return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("Orthanc did not start in 30 s")


@dataclass
class Proxy:
    """An HTTP proxy on a free loopback port in front of ``target`` (host, port). It records
    each request's path and the bytes of each response body; ``fail(path) -> status`` answers
    with that status instead of forwarding (None: forward); ``dead`` drops every connection
    without an answer, as a server that died does."""

    target: tuple[str, int]
    fail: Callable[[str], int | None] = lambda path: None
    dead: bool = False
    log: list[tuple[str, int, int]] = field(default_factory=list)  # (path, status, body bytes)

    def start(self) -> "Proxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def _forward(self) -> None:
                if proxy.dead:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = proxy.fail(self.path)
                if status is not None:
                    payload = b"injected failure"
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    proxy.log.append((self.path, status, len(payload)))
                    return
                connection = http.client.HTTPConnection(*proxy.target, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                connection.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                proxy.log.append((self.path, response.status, len(data)))

            do_GET = do_POST = do_DELETE = _forward  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def received(self, part: str) -> int:
        """Body bytes of the answers whose path holds ``part``."""
        return sum(size for path, status, size in self.log if part in path and status == 200)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
