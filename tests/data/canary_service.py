#!/usr/bin/env python3
"""A small real HTTP service for the canary tests and bench: production or a candidate.

    canary_service.py --port P [--delay-ms D] [--fail-health] [--error-every N]
                      [--start-delay-ms S] [--ready-file PATH]

GET /health answers 200 ("ok"), or 503 forever with --fail-health. POST (or GET)
/v1/completions waits D milliseconds and answers a small JSON completion; with
--error-every N every Nth one answers 500. --start-delay-ms waits before listening, like a
model server loading its weights. Threads serve requests concurrently.
"""

import time

STARTED = time.time()  # first thing: for the bench, the service's own start time

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--delay-ms", type=float, default=0.0)
ap.add_argument("--fail-health", action="store_true")
ap.add_argument("--error-every", type=int, default=0)
ap.add_argument("--start-delay-ms", type=float, default=0.0)
ap.add_argument("--ready-file", help="write 'STARTED LISTENING' (epoch seconds) here once listening")
ap.add_argument("--quiet", action="store_true", help="does nothing: a flag a candidate setting can fill in")
args = ap.parse_args()

count = 0
lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: with Nagle's algorithm the body would wait for
    # the client's delayed ACK (40 ms on Linux), a latency no real server has.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def answer(self, status, body, ctype="application/json"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def completion(self):
        global count
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        with lock:
            count += 1
            mine = count
        time.sleep(args.delay_ms / 1000.0)
        if args.error_every and mine % args.error_every == 0:
            return self.answer(500, json.dumps({"error": "injected"}))
        self.answer(200, json.dumps({"choices": [{"text": "ok"}], "n": mine}))

    def do_GET(self):
        if self.path == "/health":
            if args.fail_health:
                return self.answer(503, "unhealthy", "text/plain")
            return self.answer(200, "ok", "text/plain")
        if self.path == "/v1/completions":
            return self.completion()
        self.answer(404, "{}")

    def do_POST(self):
        if self.path == "/v1/completions":
            return self.completion()
        self.answer(404, "{}")


time.sleep(args.start_delay_ms / 1000.0)
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.allow_reuse_address = True
server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
if args.ready_file:
    with open(args.ready_file, "w") as f:
        f.write(f"{STARTED} {time.time()}")
server.serve_forever()
