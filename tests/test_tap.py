import json

from streams.local.broker import free_port
from streams.settings import Settings
from streams.tap import Tap

from .conftest import make_event, wait_for


def test_tap_never_blocks_or_raises_when_the_broker_is_down_and_counts_drops():
    down = Settings(profile="embedded", bootstrap=f"127.0.0.1:{free_port()}")  # nothing listens there
    tap = Tap(settings=down, buffer=50)
    results = [tap.record(make_event()) for _ in range(200)]
    # Every call came back while the background thread was still trying to reach the broker.
    assert tap._producer is None
    s = tap.stats
    # The buffer holds 50; the background thread may hold one more while it connects.
    assert s.accepted in (50, 51) and s.queued == 50 and s.sent == 0
    assert results.count(True) == s.accepted and results.count(False) == s.dropped == 200 - s.accepted
    final = tap.close(timeout_s=0.5)
    assert final.sent == 0
    assert final.dropped == 200  # the buffered ones are counted as dropped at close: none vanish uncounted
    assert tap.record(make_event()) is False  # closed: refused, counted, no exception
    assert tap.stats.dropped == 201


def test_tap_swallows_unserialisable_input():
    down = Settings(profile="embedded", bootstrap=f"127.0.0.1:{free_port()}")
    tap = Tap(settings=down, buffer=10)
    assert tap.record({"event_id": "x", "bad": object()}) is True  # json default=str copes
    assert tap.record(12345) is False  # not an event at all: dropped, not raised
    tap.close(timeout_s=0.2)


def test_tap_delivers_every_event_keyed_by_event_id(settings):
    from kafka import KafkaConsumer, TopicPartition

    from streams.events.topics import ensure_topics

    ensure_topics(settings)
    events = [make_event() for _ in range(300)]
    with Tap(settings=settings) as tap:
        for e in events:
            assert tap.record(e)
        captured_id = tap.capture(model="m2", model_version="v9", prompt="p", response="r")
    assert tap.stats.sent == 301 and tap.stats.dropped == 0

    from streams.events.topics import topic_specs

    spec = topic_specs(settings)["inference"]
    consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {}

    def poll():
        for msgs in consumer.poll(timeout_ms=200).values():
            for m in msgs:
                got[m.key.decode()] = json.loads(m.value)
        return len(got) >= 301

    wait_for(poll, timeout=30, message="the tapped events on the inference topic")
    consumer.close()
    assert set(got) == {e.event_id for e in events} | {captured_id}
    assert got[captured_id]["model_version"] == "v9"


def test_capture_sends_invalid_fields_as_given_so_the_worker_can_dead_letter_them():
    down = Settings(profile="embedded", bootstrap=f"127.0.0.1:{free_port()}")
    tap = Tap(settings=down, buffer=10)
    tap.capture(model="m", model_version="v", prompt="p", response="r", latency_ms=-5)
    key, value = tap._queue.get_nowait()
    assert json.loads(value)["latency_ms"] == -5
    tap.close(timeout_s=0.2)


def test_close_counts_exactly_what_reached_kafka_even_when_it_runs_out_of_time(settings):
    """A close() whose time runs out mid-flush reports as sent exactly what the broker holds, and
    the rest as dropped: no event counted twice, none counted dropped that was delivered after all."""
    from kafka import TopicPartition

    from streams import kafka_clients
    from streams.events.topics import ensure_topics, topic_specs

    ensure_topics(settings)
    n = 400
    tap = Tap(settings=settings)
    for i in range(n):
        tap.record(make_event(response=f"{i} " + "x" * 60_000))  # 24 MB: more than a 0.2 s close can send
    final = tap.close(timeout_s=0.2)
    assert final.sent + final.dropped + final.failed == final.accepted == n
    spec = topic_specs(settings)["inference"]
    consumer = kafka_clients.consumer(settings, "test-reader")
    tps = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    keys: set[bytes] = set()
    quiet_since = None
    import time

    while quiet_since is None or time.monotonic() - quiet_since < 3:  # until nothing more arrives for 3 s
        batch = consumer.poll(timeout_ms=300)
        got = {m.key for msgs in batch.values() for m in msgs}
        if got - keys:
            keys |= got
            quiet_since = time.monotonic()
        elif quiet_since is None:
            quiet_since = time.monotonic()
    consumer.close()
    assert tap.stats == final  # nothing changes after close() returned
    assert len(keys) == final.sent


def test_record_checksums_are_computed_in_c():
    # kafka-python (the tap's, the policy agent's and the local tools' client) checksums every record batch it
    # writes and reads; without the crc32c package it falls back to a pure-Python CRC-32C of about 3 MB/s.
    from kafka.record import util

    assert util.crc32c_c is not None and util.calc_crc32c.__defaults__ == (util.crc32c_c,)
    assert util.calc_crc32c(memoryview(b"123456789")) == 0xE3069283  # the CRC-32C check value
