#!/usr/bin/env python3
"""A local HTTPS endpoint that answers GET /api/v1/nodes/<name> as the API server does, for
the install image's test (plugins/host-local/tests/install_image.rs). Standard library only.

    fake_apiserver.py --cert FILE --key FILE --token TOKEN --nodes DIR --log FILE
    fake_apiserver.py --hang

The Node object is DIR/<name>.json, read on every request, so a test changes the node's pod
CIDR between runs by rewriting it; a missing file is a 404 as the API server words it. A
request without "Authorization: Bearer TOKEN" gets a 401. Every request is appended to the
log as one JSON line: {"path": ..., "authorized": ...}. With --hang, a plain TCP listener
accepts connections and never answers: an API server behind a link that drops packets.

Prints "listening on 127.0.0.1:PORT" once it accepts connections, then serves until killed.
"""

import argparse
import http.server
import json
import os
import socket
import ssl


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def make_handler(opts):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            authorized = self.headers.get("Authorization") == f"Bearer {opts.token}"
            with open(opts.log, "a") as log:
                log.write(json.dumps({"path": self.path, "authorized": authorized}) + "\n")
            prefix = "/api/v1/nodes/"
            name = self.path[len(prefix):] if self.path.startswith(prefix) else ""
            if not authorized:
                self.reply(401, status(401, "Unauthorized", "Unauthorized"))
            elif not name or "/" in name:
                self.reply(404, status(404, "NotFound", "the server could not find the requested resource"))
            else:
                try:
                    with open(os.path.join(opts.nodes, name + ".json"), "rb") as f:
                        node = json.load(f)
                except FileNotFoundError:
                    self.reply(404, status(404, "NotFound", f'nodes "{name}" not found'))
                    return
                self.reply(200, node)

        def log_message(self, *args):
            pass

    return Handler


def hang():
    listener = socket.create_server(("127.0.0.1", 0))
    print(f"listening on 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)  # kept open, never read or answered


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--token")
    parser.add_argument("--nodes")
    parser.add_argument("--log")
    parser.add_argument("--hang", action="store_true")
    opts = parser.parse_args()
    if opts.hang:
        hang()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler(opts))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(opts.cert, opts.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
