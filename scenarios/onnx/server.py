"""A minimal SageMaker-style model server around onnxruntime: GET /ping, POST /invocations with
{"inputs": [[1024 floats], ...]}. Its intra-op thread count comes from ORT_INTRA_OP_THREADS, the parameter the
example sweeps. Requests are served concurrently (onnxruntime releases the GIL while it computes)."""
import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import onnxruntime as ort

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--model", default=os.path.join(os.path.dirname(__file__), "model.onnx"))
arguments = parser.parse_args()

options = ort.SessionOptions()
options.intra_op_num_threads = int(os.environ.get("ORT_INTRA_OP_THREADS", "1"))
options.inter_op_num_threads = 1
session = ort.InferenceSession(arguments.model, options, providers=["CPUExecutionProvider"])
print(f"serving {arguments.model} on 127.0.0.1:{arguments.port} with {options.intra_op_num_threads} intra-op threads", flush=True)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the body waits for the client's
    # delayed ACK and every response takes 40 ms longer.
    disable_nagle_algorithm = True

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(200 if self.path == "/ping" else 404, {"status": "healthy"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        try:
            inputs = np.asarray(json.loads(self.rfile.read(length))["inputs"], dtype=np.float32)
            (logits,) = session.run(None, {"input": inputs})
        except (KeyError, ValueError) as error:
            self.reply(400, {"error": str(error)})
            return
        self.reply(200, {"predictions": logits.argmax(axis=1).tolist()})

    def log_message(self, *arguments):
        pass


ThreadingHTTPServer(("127.0.0.1", arguments.port), Handler).serve_forever()
