"""Shared fixtures: a small seeded demo stream and a loop config on temp-dir state and MLflow."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from mlops_loop.core.config import LoopConfig, load_config
from mlops_loop.demo.data import SCENARIO, generate


@pytest.fixture(scope="session")
def demo_frames():
    """(reference, {name: batch}) of the demo stream, smaller than the demo's for speed."""
    return generate(seed=11, reference_rows=3000)


def write_loop(root: Path, reference, batches: dict | None = None, **overrides) -> Path:
    """Write reference, landing batches and a loop YAML under `root`; return the YAML path."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "landing").mkdir(exist_ok=True)
    reference.to_parquet(root / "data" / "reference.parquet", index=False)
    for name, frame in (batches or {}).items():
        frame.to_parquet(root / "landing" / f"{name}.parquet", index=False)
    import importlib.resources

    doc = yaml.safe_load(
        importlib.resources.files("mlops_loop.demo").joinpath("loop.yaml").read_text()
    )
    doc["promotion"]["bootstrap_rounds"] = 100
    doc["model"]["params"]["max_iter"] = 60
    for dotted, value in overrides.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path = root / "loop.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def loop_config(tmp_path, demo_frames) -> LoopConfig:
    reference, _ = demo_frames
    return load_config(write_loop(tmp_path, reference))


@pytest.fixture(scope="session")
def scenario():
    return SCENARIO


@pytest.fixture
def webhook():
    """A real local HTTP server standing in for a webhook: `(url, received JSON bodies)`."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
