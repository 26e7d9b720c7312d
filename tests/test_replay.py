"""``streamwarden tap replay FILE.jsonl`` loads recorded logs, bad lines included."""

import json
import subprocess
import sys

import pytest
from kafka import KafkaConsumer, TopicPartition

from streams.events.topics import ensure_topics, topic_specs

from .conftest import make_event, wait_for, worker_env

pytestmark = pytest.mark.integration


def test_replay_sends_every_line_as_recorded(settings, tmp_path):
    ensure_topics(settings)
    events = [make_event() for _ in range(250)]
    lines = [e.model_dump_json() for e in events] + ["{this line is broken", ""]
    f = tmp_path / "log.jsonl"
    f.write_text("\n".join(lines) + "\n")
    env_args = ["--bootstrap", settings.bootstrap, "--embedded"]
    proc = subprocess.run(
        [sys.executable, "-m", "streams.cli", "tap", "replay", str(f), *env_args],
        capture_output=True,
        text=True,
        timeout=120,
        env=worker_env(settings),
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary == {"lines": 251, "sent": 251, "dropped": 0, "failed": 0}

    spec = topic_specs(settings)["inference"]
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = []

    def poll():
        for msgs in consumer.poll(timeout_ms=200).values():
            got.extend(m.value for m in msgs)
        return len(got) >= 251

    wait_for(poll, timeout=30, message="the replayed lines")
    consumer.close()
    assert sorted(got) == sorted(line.encode() for line in lines if line)
