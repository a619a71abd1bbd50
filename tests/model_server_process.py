"""A stand-in for the embedded model server, as a real process: it can answer, or die the way a mis-built llama.cpp does.

``python tests/model_server_process.py PORT [MODE]``. It answers ``GET /v1/models`` like llama.cpp's
server and prints a line of log. On a ``POST`` (a completion), MODE decides: ``ok`` answers ``{"ok": true}``
(what a structured-output probe asks for); ``segv`` (default) ends the process with SIGSEGV, as the AMX
build does; ``exit3`` exits with code 3. A real process that really dies, so the supervisor, the crash
report and the CLI see what they would see in the field.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> None:
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "segv"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model"}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if mode == "ok":
                reply = {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": "smollm2-135m-instruct",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": '{"ok": true}'},
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
                }
                body = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            print("ggml_backend_amx_mul_mat: about to fault", flush=True)
            if mode == "exit3":
                os._exit(3)
            os.kill(os.getpid(), signal.SIGSEGV)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    print(f"fake llama.cpp server listening on 127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
