"""Stage serve: the trained model behind HTTP. GET /health, POST /generate {"prompt": ..., ...}.

The port comes from SKYFLOW_SERVICE_PORT (set by skyflow for a service stage), else --port. Under
skyflow with lineage on, /health also names the registered model version it serves (`tinylm/3`),
which skyflow made from this run's train stage; it is tagged on the serve stage's MLflow run too.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from tinylm.model import MlpLM

DEFAULT_PORT = 8000
MAX_TOKENS_LIMIT = 100


def generate_text(model: MlpLM, prompt: str, max_tokens: int = 20, temperature: float = 0.8, seed: int = 0) -> str:
    index = {w: i for i, w in enumerate(model.vocab)}
    prompt_ids = [index.get(w, 1) for w in prompt.split()]
    out = model.generate(prompt_ids, min(max_tokens, MAX_TOKENS_LIMIT), np.random.default_rng(seed), temperature)
    return " ".join(model.vocab[i] for i in out if i != 0)


def served_version(timeout_s: float = 120.0) -> str | None:
    """`NAME/VERSION` of the registered model this run's train stage produced: skyflow tags the train
    stage's MLflow run `skyflow.model_version.model` once the version exists. None without MLflow."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return None
    try:
        from mlflow import MlflowClient
    except ImportError:
        return None
    try:
        client = MlflowClient()
        parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        query = f"tags.`mlflow.parentRunId` = '{parent}' AND tags.`skyflow.stage` = 'train'"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            current = [r.data.tags for r in client.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]], query)
                       if "skyflow.superseded_by" not in r.data.tags]
            found = next((tags["skyflow.model_version.model"] for tags in current
                          if "skyflow.model_version.model" in tags), None)
            if found:
                client.set_tag(run_id, "skyflow.serves", found)
                return str(found)
            time.sleep(1.0)  # the version is registered while eval runs; it may be a moment behind
    except Exception as exc:  # the store went away: serve all the same
        print(f"mlflow: {type(exc).__name__}: {exc}; the served model version is unknown", flush=True)
    return None


def make_handler(model: MlpLM, about: dict[str, Any] | None = None) -> type[BaseHTTPRequestHandler]:
    about = about if about is not None else {}

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._reply(200, {"status": "ok", "vocab_size": len(model.vocab), **about})
            else:
                self._reply(404, {"error": f"no route {self.path}; try GET /health or POST /generate"})

        def do_POST(self) -> None:
            if self.path != "/generate":
                self._reply(404, {"error": f"no route {self.path}; try POST /generate"})
                return
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                text = generate_text(model, str(request.get("prompt", "")), int(request.get("max_tokens", 20)),
                                     float(request.get("temperature", 0.8)), int(request.get("seed", 0)))
            except (ValueError, TypeError) as exc:
                self._reply(400, {"error": f"bad request: {exc}"})
                return
            self._reply(200, {"prompt": request.get("prompt", ""), "completion": text})

        def log_message(self, format: str, *args: object) -> None:
            print(f"serve {self.address_string()} {format % args}", flush=True)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=os.environ.get("SKYFLOW_INPUT_MODEL"))
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    args = parser.parse_args()
    port = int(os.environ.get("SKYFLOW_SERVICE_PORT") or args.port)
    about: dict[str, Any] = {"model_version": None}
    server = ThreadingHTTPServer((args.host, port), make_handler(MlpLM.load(Path(args.model)), about))
    print(f"serve listening on {args.host}:{port} (GET /health, POST /generate)", flush=True)

    def name_version() -> None:
        about["model_version"] = served_version()
        if about["model_version"]:
            print(f"serve model version {about['model_version']}", flush=True)

    threading.Thread(target=name_version, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
