"""An HTTP file server where the first of every three requests for a URL fails with 503
Service Unavailable: a transient error, as cloud storage gives them. It serves byte
ranges, as GDAL reads.

Run as ``python flaky_http.py FOLDER``; it prints its port. (A separate process: GDAL
holds Python's GIL while it waits for a response, so a server thread would never answer.)
"""

import http.server
import re
import sys
from pathlib import Path

ROOT = Path(sys.argv[1])
REQUESTS = []


class Flaky(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def serve(self, body):
        REQUESTS.append(self.path)
        if self.path == "/count":
            self.reply(200, str(len(REQUESTS)).encode(), body)
        elif REQUESTS.count(self.path) % 3 == 1:
            self.reply(503, b"", body)
        elif not (ROOT / self.path.split("?")[0].lstrip("/")).is_file():
            self.reply(404, b"", body)
        else:
            data = (ROOT / self.path.split("?")[0].lstrip("/")).read_bytes()
            first, last = 0, len(data) - 1
            if self.headers.get("Range"):
                a, b = re.match(r"bytes=(\d+)-(\d*)", self.headers["Range"]).groups()
                first, last = int(a), min(int(b) if b else last, last)
                self.reply(206, data[first:last + 1], body,
                           {"Content-Range": f"bytes {first}-{last}/{len(data)}"})
            else:
                self.reply(200, data, body)

    def reply(self, status, data, body, headers=None):
        self.send_response(status)
        for k, v in {"Content-Length": str(len(data)), "Accept-Ranges": "bytes",
                     **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.serve(True)

    def do_HEAD(self):
        self.serve(False)


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    print(server.server_address[1], flush=True)
    server.serve_forever()
