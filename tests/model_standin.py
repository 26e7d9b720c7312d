"""A stand-in for an OpenAI-compatible model endpoint (vLLM/TGI/gateway), for tests only.

It answers /v1/chat/completions from a Python function, on 127.0.0.1, and records requests.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ModelStandIn:
    def __init__(self, answer):
        self.answer = answer  # prompt -> text, or (prompt, model) -> text
        self.takes_model = answer.__code__.co_argcount == 2 if hasattr(answer, "__code__") else False
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                prompt = body["messages"][-1]["content"]
                n = int(body.get("n", 1))
                if body.get("stream"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.end_headers()
                    words = outer.answer(prompt, body["model"]) if outer.takes_model else outer.answer(prompt)
                    for i, word in enumerate(words.split(" ")):
                        delta = {"content": (" " if i else "") + word}
                        chunk = {
                            "id": "cmpl-standin",
                            "object": "chat.completion.chunk",
                            "model": body["model"],
                            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
                        }
                        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                        self.wfile.flush()
                    end = {
                        "id": "cmpl-standin",
                        "object": "chat.completion.chunk",
                        "model": body["model"],
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    }
                    self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
                    self.wfile.flush()
                    return
                payload = {
                    "id": "cmpl-standin",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": i,
                            "message": {
                                "role": "assistant",
                                "content": outer.answer(prompt, body["model"]) if outer.takes_model else outer.answer(prompt),
                            },
                            "finish_reason": "stop",
                        }
                        for i in range(n)
                    ],
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 refuses a burst of concurrent clients
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
