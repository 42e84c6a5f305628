"""A real Mosquitto broker for the tests: started on 127.0.0.1 on a free port with a temporary config (never a system
service), stopped gracefully (SIGTERM: it saves its persistence file) and restarted on the same port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .mjpeg_server import free_port


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.access(p, os.X_OK)), None)
    if found is None:
        message = "the mosquitto broker is not installed (apt-get install mosquitto)"
        if os.environ.get("EDGEPORT_REQUIRE_DATA"):
            pytest.fail(message)
        pytest.skip(message)
    return found


class Broker:
    def __init__(self, folder: Path, port: int | None = None):
        self.binary, self.folder, self.port = mosquitto_binary(), folder, port or free_port()
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "mosquitto.conf").write_text(
            # user root: mosquitto started as root otherwise drops to 'mosquitto', who cannot read pytest's 0700 folders
            # (no effect when the tests run as another user)
            f"user root\nlistener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {folder}/\n"
            f"log_dest file {folder}/mosquitto.log\n", encoding="utf-8")

    def start(self) -> "Broker":
        self.process = subprocess.Popen([self.binary, "-c", str(self.folder / "mosquitto.conf")],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text(errors='replace')}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"
