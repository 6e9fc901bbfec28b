"""A real uvicorn server on 127.0.0.1 (random port) in a background thread, for the service tests."""

from __future__ import annotations

import base64
import io
import subprocess
import threading
import time
from contextlib import contextmanager

import uvicorn
from PIL import Image

API_KEY = "test-key-0123456789abcdef"


def png_data_url(color=(200, 30, 30), size=48) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@contextmanager
def running(app, timeout: float = 60.0):
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """Terminate server processes started by a test, killing any that do not stop in 30 s."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
