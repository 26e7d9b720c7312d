"""Every Kafka client's configuration, built from :class:`~streams.settings.Settings`.

This module is the only place that knows bootstrap lists, TLS/SASL, client ids and what
the embedded broker can and cannot do (tansu: no idempotent producer, no transactions).
The tap, the worker (faust), the policy agent, the gateway, the CLI and the local tools
all get their clients from here, so a security setting reaches every one of them.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from streams.settings import Settings

if TYPE_CHECKING:  # kafka-python is imported when a client is made, not at import time
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer


def bootstrap_servers(settings: Settings) -> list[str]:
    return [hp.strip() for hp in settings.bootstrap.split(",") if hp.strip()]


def security(settings: Settings) -> dict[str, Any]:
    """kafka-python's TLS/SASL keyword arguments."""
    k = settings.kafka
    out: dict[str, Any] = {"security_protocol": k.security_protocol}
    if k.sasl_mechanism:
        out["sasl_mechanism"] = k.sasl_mechanism
        out["sasl_plain_username"] = k.sasl_username
        out["sasl_plain_password"] = k.sasl_password.get_secret_value() if k.sasl_password else None
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(k, name)
        if value is not None:
            out[name] = str(value)
    return out


def producer_config(settings: Settings, client_id: str = "streamwarden-tap", **overrides: Any) -> dict[str, Any]:
    """kafka-python producer settings: Kafka's safe defaults, or what the embedded broker can do."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": client_id,
        "linger_ms": settings.tap_linger_ms,
        "max_block_ms": 5_000,
        "request_timeout_ms": 10_000,
        "retries": 5,
        **security(settings),
    }
    if settings.embedded:
        # tansu has no InitProducerId: no idempotent producer there.
        config.update(acks=1, enable_idempotence=False)
    else:
        config.update(acks="all", enable_idempotence=True)
    config.update(overrides)
    return config


# How long the worker's fetch may wait for data on the embedded broker. Kafka answers a waiting fetch once
# fetch.min.bytes (1) has arrived, so faust's long wait (1,500 ms, which faust fixes for aiokafka) costs nothing there.
# tansu holds the fetch instead (bench/bench_fetch_wait.py, a kafka-python reader: a record produced into a waiting
# 1,500 ms fetch was read 0.40-0.45 s later at the median, 0.75 s at worst; 25 ms with 100 ms waits). The worker's
# 1,500 ms wait made the p50 from produce to detection 0.69 s at 160 events/s; 0.28 s with 100 ms (a probe, one run each).
# The kafka-python readers (policy agent, demo, tools) keep their 500 ms: with 100 ms waits for them too, the 5-minute
# demo ended 10,493 events behind instead of 297.
EMBEDDED_FETCH_MAX_WAIT_MS = 100


def consumer_config(settings: Settings, client_id: str, **overrides: Any) -> dict[str, Any]:
    """kafka-python consumer settings for readers that assign partitions themselves and commit nothing."""
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": client_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        **security(settings),
        **overrides,
    }


def admin_config(settings: Settings, timeout_s: float = 30.0) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap_servers(settings),
        "client_id": "streamwarden-admin",
        "request_timeout_ms": int(timeout_s * 1000),
        **security(settings),
    }


def producer(settings: Settings, client_id: str, **overrides: Any) -> KafkaProducer:
    from kafka import KafkaProducer

    return KafkaProducer(**producer_config(settings, client_id, **overrides))


def consumer(settings: Settings, client_id: str, **overrides: Any) -> KafkaConsumer:
    from kafka import KafkaConsumer

    return KafkaConsumer(**consumer_config(settings, client_id, **overrides))


def admin(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    from kafka import KafkaAdminClient

    return KafkaAdminClient(**admin_config(settings, timeout_s))


# -- faust (the worker) -----------------------------------------------------------------


def faust_broker_urls(settings: Settings) -> list[str]:
    return [f"kafka://{hp}" for hp in bootstrap_servers(settings)]


def faust_credentials(settings: Settings) -> Any:
    """faust's credentials object for TLS and/or SASL, or None for PLAINTEXT."""
    import faust

    k = settings.kafka
    if k.security_protocol == "PLAINTEXT":
        return None
    context = None
    if k.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=str(k.ssl_cafile) if k.ssl_cafile else None)
        if k.ssl_certfile:
            context.load_cert_chain(str(k.ssl_certfile), str(k.ssl_keyfile) if k.ssl_keyfile else None)
    if k.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    password = k.sasl_password.get_secret_value() if k.sasl_password else None
    return faust.SASLCredentials(
        username=k.sasl_username,
        password=password,
        mechanism=k.sasl_mechanism,
        ssl_context=context,
    )


def faust_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for the worker."""
    options: dict[str, Any] = dict(
        broker=faust_broker_urls(settings),
        broker_credentials=faust_credentials(settings),
        store="memory://",  # the worker keeps no faust tables: correctness never rests on table recovery
        datadir=str(settings.state_dir / "worker" / "{conf.name}"),  # faust fills in the app id
        web_bind=settings.web_host,
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.output_partitions,
        producer_max_request_size=max_message_bytes(settings),
        # Metrics count a batch when its offsets are committed: commit about as often as windows close.
        broker_commit_interval=settings.commit_interval_s or min(2.8, max(0.5, settings.metrics_window_s)),
        consumer_max_fetch_size=max(4_194_304, settings.max_event_bytes * 2),
        # Backpressure: when the detectors are slower than the input, faust stops taking records
        # once this many wait in memory; the backlog stays in Kafka (streamwarden_consumer_lag_records).
        stream_buffer_maxsize=max(settings.stream_buffer_events, settings.batch_size),
    )
    if settings.effective_replication_factor:
        options["topic_replication_factor"] = settings.effective_replication_factor
    if settings.embedded:
        options.update(broker_session_timeout=6, broker_heartbeat_interval=1, topic_replication_factor=1)
    return options


def faust_transport(settings: Settings, app: Any) -> Any:
    """The worker's faust transport, or None for faust's own.

    On the embedded broker the worker's consumer fetches with :data:`EMBEDDED_FETCH_MAX_WAIT_MS`: faust fixes
    aiokafka's ``fetch_max_wait_ms`` at 1,500 ms, and tansu does not cut a wait short when a record arrives (see
    above). On Kafka, faust's own.
    """
    if not settings.embedded:
        return None
    return _short_fetch_transport()(app.conf.broker_consumer, app)


def _short_fetch_transport() -> Any:
    from faust.transport.drivers import aiokafka as driver

    class ShortFetchConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka reads it when the consumer starts (its fetcher is made then); faust offers no setting.
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError("aiokafka's consumer no longer has _fetch_max_wait_ms: update faust_transport")
            consumer._fetch_max_wait_ms = EMBEDDED_FETCH_MAX_WAIT_MS
            return consumer

    class ShortFetchConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ShortFetchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class ShortFetchTransport(driver.Transport):
        Consumer = ShortFetchConsumer

    return ShortFetchTransport


# A topic's max.message.bytes when its creator set none (Kafka's default, and what tansu takes).
BROKER_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def max_message_bytes(settings: Settings) -> int:
    """The largest request the worker's producer sends: an event at the size limit, with room for headers."""
    return max(1_048_576, settings.max_event_bytes + 65_536)
