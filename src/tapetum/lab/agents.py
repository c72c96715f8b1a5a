"""Small lab servers and clients, run as a script inside the lab's network namespaces.

Standard library only (plus pyftpdlib for `ftp-server`), because the FTP server runs under the
system Python that has Debian's python3-pyftpdlib, not the one Tapetum is installed in.

    agents.py http --bind 0.0.0.0:80 --bind 198.51.100.77:443:/path/c2  (c2.crt, c2.key)
    agents.py ntp-server --bind 198.51.100.123
    agents.py ntp-query 198.51.100.123
    agents.py ftp-server --bind 10.77.0.20 --user backup --password P --root DIR
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import socket
import ssl
import struct
import sys
import threading
import time

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900 (NTP era 0) to 1970
CHUNK_BYTES = 1 << 16


class Handler(http.server.BaseHTTPRequestHandler):
    """Answers any GET with a body whose size depends on the path (a stand-in for update
    checks, CDN objects and C2 tasking) and swallows uploads (PUT/POST) without storing them."""

    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.22.1"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the capture is the record."""

    def _reply(self, code: int, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        digest = hashlib.sha256(self.path.encode()).digest()
        if path.startswith("/api/") or path.startswith("/beacon"):
            # C2 tasking: small JSON, usually "nothing to do".
            task = "sleep" if digest[0] % 5 else "collect"
            body = json.dumps({"task": task, "id": digest[:6].hex(), "pad": digest.hex()}).encode()
            self._reply(200, body, "application/json")
            return
        if path.startswith("/check") or path.endswith(".json"):
            info = {"latest": "12.8", "packages": int(digest[1]), "sig": digest.hex()}
            self._reply(200, json.dumps(info).encode(), "application/json")
            return
        # Deterministic size from the path: 1 KiB .. ~1.5 MiB, like CDN objects.
        size = 1024 + int.from_bytes(digest[:3], "big") % (1536 * 1024)
        self._reply(200, (digest * (size // len(digest) + 1))[:size])

    do_HEAD = do_GET

    def _swallow(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        got = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                line = self.rfile.readline()
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    self.rfile.readline()
                    break
                got += len(self.rfile.read(n))
                self.rfile.readline()
        else:
            while got < length:
                data = self.rfile.read(min(CHUNK_BYTES, length - got))
                if not data:
                    break
                got += len(data)
        self._reply(201, json.dumps({"received": got}).encode(), "application/json")

    do_PUT = _swallow
    do_POST = _swallow


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def serve_http(binds: list[str]) -> None:
    servers = []
    for bind in binds:
        host, port, *cert = bind.split(":", 2)
        srv = Server((host, int(port)), Handler)
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(f"{cert[0]}.crt", f"{cert[0]}.key")
            srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
        servers.append(srv)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for t in threads:
        t.join()


def _ntp_now() -> tuple[int, int]:
    now = time.time() + NTP_EPOCH_OFFSET
    return int(now), int((now % 1) * (1 << 32))


def ntp_server(bind: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, 123))
    print("ready", flush=True)
    while True:
        data, peer = sock.recvfrom(512)
        if len(data) < 48:
            continue
        sec, frac = _ntp_now()
        # LI 0, version 4, mode 4 (server), stratum 2; originate = the client's transmit time.
        head = struct.pack("!BBbb", 0x24, 2, 6, -20) + struct.pack("!II", 0x100, 0x200)
        ref = b"GPS\x00"
        reply = head + ref + struct.pack("!II", sec - 30, frac) + data[40:48]
        reply += struct.pack("!IIII", sec, frac, sec, frac)
        sock.sendto(reply, peer)


def ntp_query(server: str) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2.0)
    sec, frac = _ntp_now()
    sock.sendto(b"\x23" + bytes(39) + struct.pack("!II", sec, frac), (server, 123))
    try:
        sock.recvfrom(512)
    except OSError:
        return 1
    return 0


def ftp_server(bind: str, user: str, password: str, root: str) -> None:
    from pyftpdlib.authorizers import DummyAuthorizer  # type: ignore[import-not-found]
    from pyftpdlib.handlers import FTPHandler  # type: ignore[import-not-found]
    from pyftpdlib.servers import FTPServer  # type: ignore[import-not-found]

    auth = DummyAuthorizer()
    auth.add_user(user, password, root, perm="elr")
    auth.add_anonymous(root, perm="elr")

    class LabFTPHandler(FTPHandler):  # type: ignore[misc]
        banner = "(vsFTPd 3.0.3)"
        auth_failed_timeout = 0.5  # vsftpd's delay_failed_login is 1 s
        passive_ports = range(50000, 50100)
        masquerade_address = bind

    LabFTPHandler.authorizer = auth
    server = FTPServer((bind, 21), LabFTPHandler)
    server.max_cons = 256
    print("ready", flush=True)
    server.serve_forever(handle_exit=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="agents.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("http")
    h.add_argument("--bind", action="append", required=True, help="ADDR:PORT[:CERT_PREFIX]")
    ns = sub.add_parser("ntp-server")
    ns.add_argument("--bind", required=True)
    nq = sub.add_parser("ntp-query")
    nq.add_argument("server")
    f = sub.add_parser("ftp-server")
    f.add_argument("--bind", required=True)
    f.add_argument("--user", required=True)
    f.add_argument("--password", required=True)
    f.add_argument("--root", required=True)
    a = ap.parse_args(argv)
    if a.cmd == "http":
        serve_http(a.bind)
    elif a.cmd == "ntp-server":
        ntp_server(a.bind)
    elif a.cmd == "ntp-query":
        return ntp_query(a.server)
    elif a.cmd == "ftp-server":
        ftp_server(a.bind, a.user, a.password, a.root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
