"""What surrounds a cluster in the production-shape run: a TLS ingress and a telemetry sink.

    python -m tests.support.edge ingress CERT KEY LISTEN_HOST:PORT UPSTREAM_HOST:PORT
    python -m tests.support.edge sink LISTEN_HOST:PORT

The ingress terminates TLS (a certificate the test made, trusted by the callers the test
runs) and forwards plain TCP to a Service, as an ingress controller would. The sink answers
200 to every request (an OpenTelemetry collector's OTLP/HTTP endpoint, for instance).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def make_certificate(folder: Path, *names: str) -> tuple[Path, Path]:
    """A self-signed certificate for `names` (openssl); returns (certificate, key)."""
    cert, key = folder / "ingress.crt", folder / "ingress.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={names[0]}",
            "-addext",
            "subjectAltName=" + ",".join(f"DNS:{n}" for n in names),
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.close()
    with contextlib.suppress(OSError):
        source.close()


def ingress(cert: str, key: str, listen: str, upstream: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    target = _address(upstream)
    with socket.create_server(_address(listen), backlog=64) as server:
        while True:
            raw, _ = server.accept()
            try:
                client = context.wrap_socket(raw, server_side=True)
                backend = socket.create_connection(target, timeout=10)
                backend.settimeout(None)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            for a, b in ((client, backend), (backend, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


class _Ok(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST

    def log_message(self, format: str, *args: object) -> None:
        pass


def sink(listen: str) -> None:
    ThreadingHTTPServer(_address(listen), _Ok).serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "ingress":
        ingress(*sys.argv[2:6])
    else:
        sink(sys.argv[2])
