"""A real HTTP MJPEG server (multipart/x-mixed-replace, what IP cameras serve) on 127.0.0.1, standard library only,
that a test can stop and restart on the same port to play a camera that drops out."""

from __future__ import annotations

import http.server
import socket
import threading
import time

import cv2
import numpy as np

BOUNDARY = "frame"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def solid_jpeg(bgr: tuple[int, int, int], size: tuple[int, int] = (160, 120)) -> bytes:
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[:] = bgr
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


class MjpegServer:
    def __init__(self, port: int, jpeg: bytes, fps: float = 20.0):
        self.port, self.jpeg, self.fps = port, jpeg, fps
        self._server: http.server.ThreadingHTTPServer | None = None
        self._stopped = threading.Event()

    def start(self) -> "MjpegServer":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                try:
                    while not owner._stopped.is_set():
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(owner.jpeg)}\r\n\r\n"
                                         .encode() + owner.jpeg + b"\r\n")
                        self.wfile.flush()
                        time.sleep(1 / owner.fps)
                except OSError:
                    pass

        self._stopped.clear()
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()  # ends the open responses: the client sees the stream end
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"
