"""MQTT out against a real Mosquitto broker: delivery, order, QoS 1 across a broker restart, the retained status and
its last will (edge-predict killed with SIGKILL), and the bounded queue's drop count."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from edgeport.runtime.errors import UsageError
from edgeport.runtime.service.mqtt import MqttSink, parse_mqtt_url

from .broker import Broker
from .mjpeg_server import free_port
from .test_service import colour_video
from .tiny_models import colour_bundle

BIN = Path(sys.executable).parent


class Subscriber:
    """A persistent-session QoS 1 subscriber collecting (topic, payload, retained) in arrival order."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "test-subscriber"):
        self.messages: list[tuple[str, str, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.wait(lambda: self.client.is_connected(), 10)

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain)))
            self.cond.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def records(self, topic: str) -> list[dict]:
        return [json.loads(p) for t, p, _ in self.messages if t == topic]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def broker(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return colour_bundle(tmp_path_factory.mktemp("mqtt") / "bundle")


def test_mqtt_urls_are_checked():
    target = parse_mqtt_url("mqtts://ann:s%40cret@box.local/site/edge")
    assert (target.host, target.port, target.prefix, target.tls, target.username, target.password) == \
        ("box.local", 8883, "site/edge", True, "ann", "s@cret")
    assert parse_mqtt_url("mqtt://h:1999/p").port == 1999
    for bad in ("http://h/p", "mqtt://h", "mqtt://h/a/#", "mqtt:///p"):
        with pytest.raises(UsageError):
            parse_mqtt_url(bad)


def test_edge_predict_publishes_every_record_in_order_with_a_retained_status(broker, bundle, tmp_path):
    sub = Subscriber(broker, "edge/#")
    video = colour_video(tmp_path / "v.avi", ["red", "green", "blue"] * 8)
    proc = subprocess.run([BIN / "edge-predict", bundle, "--video", video, "--name", f"door={video}", "--mqtt",
                           f"{broker.url}/edge", "--output-format", "jsonl", "-k", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert sub.wait(lambda: len(sub.records("edge/door")) >= 25, 10)
    frames = [r for r in sub.records("edge/door") if "event" not in r]
    assert [r["frame"] for r in frames] == list(range(24))
    assert [r["label"] for r in frames] == ["red", "green", "blue"] * 8
    assert sub.records("edge/door")[-1]["event"] == "source_ended"
    assert [p for t, p, _ in sub.messages if t == "edge/status"] == ["online", "offline"]
    sub.close()
    late = Subscriber(broker, "edge/status", client_id="late")  # retained: a new subscriber reads the last status at once
    assert late.wait(lambda: late.messages, 5) and late.messages[0] == ("edge/status", "offline", True)
    late.close()


def test_qos1_records_survive_a_broker_restart_in_order(broker, tmp_path):
    sub = Subscriber(broker, "plant/#")
    sink = MqttSink(f"{broker.url}/plant", qos=1, reconnect_max=1)
    assert sub.wait(lambda: ("plant/status", "online", False) in sub.messages, 10)
    for i in range(50):
        sink({"source_id": "cam", "frame": i})
    assert sink.flush(10)
    broker.stop()
    for i in range(50, 120):  # produced while the broker is away: they wait in the queue
        sink({"source_id": "cam", "frame": i})
        time.sleep(0.01)
    assert sink.pending > 0
    broker.start()
    assert sub.wait(lambda: len({r["frame"] for r in sub.records("plant/cam")}) >= 120, 30), len(sub.records("plant/cam"))
    frames = [r["frame"] for r in sub.records("plant/cam")]
    deduped = [f for i, f in enumerate(frames) if f not in frames[:i]]  # QoS 1: at least once, a resend may repeat
    assert deduped == list(range(120))
    assert sink.dropped == 0 and not sub.records("plant/dropped")
    sink.close()
    sub.close()


def test_a_full_queue_drops_the_oldest_and_publishes_the_count(broker, tmp_path):
    sub = Subscriber(broker, "yard/#")
    broker.stop()
    sink = MqttSink(f"{broker.url}/yard", qos=1, queue_max=5, reconnect_max=1)
    for i in range(20):
        sink({"source_id": "cam", "frame": i})
    assert sink.dropped == 15 and sink.pending == 5
    broker.start()
    assert sub.wait(lambda: len(sub.records("yard/cam")) >= 5 and sub.records("yard/dropped"), 30)
    assert [r["frame"] for r in sub.records("yard/cam")] == list(range(15, 20))
    dropped = sub.records("yard/dropped")
    assert dropped[0]["dropped"] == 15 and dropped[0]["queue_max"] == 5
    sink.close()
    sub.close()


def test_the_last_will_marks_a_killed_edge_predict_offline(broker, bundle, tmp_path):
    sub = Subscriber(broker, "box/status")
    folder = tmp_path / "incoming"
    folder.mkdir()
    proc = subprocess.Popen([BIN / "edge-predict", bundle, "--watch", folder, "--mqtt", f"{broker.url}/box"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert sub.wait(lambda: ("box/status", "online", False) in sub.messages, 30), proc.stderr
        proc.send_signal(signal.SIGKILL)  # no clean shutdown: only the will can say offline
        proc.wait(10)
        assert sub.wait(lambda: ("box/status", "offline", False) in sub.messages, 10), sub.messages
    finally:
        if proc.poll() is None:
            proc.kill()
    sub.close()


def _server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 (subjectAltName IP), PEM: (CA cert, server cert, server key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test broker CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return paths


def test_mqtts_with_a_ca_file_and_a_password(tmp_path):
    """A TLS listener that wants a user and password: the sink gets through with --mqtt-ca and user:pass in the URL."""
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    ca, cert, key = _server_cert(tmp_path)
    subprocess.run([passwd, "-c", "-b", tmp_path / "passwd", "edge", "s3cret"], check=True)
    plain, tls = Broker(tmp_path / "broker"), free_port()
    (plain.folder / "mosquitto.conf").write_text(  # the plain listener for the test's subscriber, TLS + password for the edge
        f"user root\nper_listener_settings true\nlistener {plain.port} 127.0.0.1\nallow_anonymous true\n"
        f"listener {tls} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\nallow_anonymous false\n"
        f"password_file {tmp_path / 'passwd'}\nlog_dest file {plain.folder}/mosquitto.log\n")
    plain.start()
    try:
        sub = Subscriber(plain, "secure/#")
        sink = MqttSink(f"mqtts://edge:s3cret@127.0.0.1:{tls}/secure", ca_file=ca)
        sink({"source_id": "cam", "frame": 0})
        assert sub.wait(lambda: sub.records("secure/cam"), 15), sub.messages
        assert sub.records("secure/cam") == [{"source_id": "cam", "frame": 0}]
        sink.close()
        wrong = MqttSink(f"mqtts://edge:wrong@127.0.0.1:{tls}/secure", ca_file=ca)
        wrong({"source_id": "cam", "frame": 1})
        time.sleep(2)
        assert wrong.pending == 1 and len(sub.records("secure/cam")) == 1  # refused: the record waits, nothing leaks
        wrong.close(timeout=1)
        sub.close()
    finally:
        plain.stop()
    with pytest.raises(UsageError):
        MqttSink(f"mqtt://127.0.0.1:{tls}/x", ca_file=ca)  # a CA without TLS is a mistake, not ignored
