"""How long a record produced into a waiting fetch takes to be read, by the consumer's ``fetch_max_wait_ms``, on the
embedded broker (tansu): Kafka answers a waiting fetch when a record arrives, so there the wait costs nothing; tansu
does not, so on the embedded profile the worker's faust consumer (whose wait faust fixes at 1,500 ms) waits
:data:`~streams.kafka_clients.EMBEDDED_FETCH_MAX_WAIT_MS` at most. Baseline: a 10 ms wait, in the same run.

    .venv/bin/python bench/bench_fetch_wait.py [--records 40] [--waits 1500,500,100,10]

One partition, one record every 137 ms (never in step with the waits), produced with ``linger_ms=0`` and flushed.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

from kafka import TopicPartition
from kafka.admin import NewTopic

from streams import kafka_clients
from streams.local.broker import EmbeddedBroker
from streams.settings import Settings


def read_delays(settings: Settings, wait_ms: int, records: int) -> list[float]:
    topic = f"fetch-wait-{wait_ms}-{uuid.uuid4().hex[:6]}"
    admin = kafka_clients.admin(settings)
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    consumer = kafka_clients.consumer(settings, "bench-fetch-wait", fetch_max_wait_ms=wait_ms)
    consumer.assign([TopicPartition(topic, 0)])
    read: dict[bytes, float] = {}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            for messages in consumer.poll(timeout_ms=100).values():
                for m in messages:
                    read[m.value] = time.monotonic()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    producer = kafka_clients.producer(settings, "bench-fetch-wait", linger_ms=0)
    time.sleep(1.0)  # the consumer is waiting in a fetch
    sent: dict[bytes, float] = {}
    for i in range(records):
        key = str(i).encode()
        sent[key] = time.monotonic()
        producer.send(topic, key)
        producer.flush()
        time.sleep(0.137)
    time.sleep(2 + wait_ms / 1000)
    stop.set()
    thread.join(5)
    producer.close()
    consumer.close()
    return sorted(read[k] - t for k, t in sent.items() if k in read)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--waits", default="1500,500,100,10")
    args = ap.parse_args()
    waits = [int(w) for w in args.waits.split(",")]
    if 10 not in waits:
        waits.append(10)  # the baseline
    with EmbeddedBroker() as broker:
        settings = Settings(profile="embedded", bootstrap=broker.bootstrap)
        delays = {w: read_delays(settings, w, args.records) for w in waits}
    base = statistics.median(delays[10])
    for w in waits:
        d = delays[w]
        p50 = statistics.median(d)
        print(
            f"fetch_max_wait_ms {w:5d}: read {len(d)}/{args.records}, produce -> read p50 {1000 * p50:6.1f} ms, "
            f"max {1000 * d[-1]:6.1f} ms  (x{p50 / base:.1f} of the 10 ms wait's p50)",
            flush=True,
        )


if __name__ == "__main__":
    main()
