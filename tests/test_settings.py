import asyncio

import pytest
from pydantic import ValidationError

from streams import kafka_clients
from streams.settings import Settings, load_settings


def test_precedence_flags_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "sw.yaml"
    cfg.write_text("bootstrap: file:9092\nbatch_size: 7\ntopic_prefix: fromfile.\n")
    monkeypatch.setenv("STREAMWARDEN_CONFIG", str(cfg))
    monkeypatch.setenv("STREAMWARDEN_BATCH_SIZE", "11")
    s = load_settings(topic_prefix="flag.", web_port=None)
    assert s.bootstrap == "file:9092"  # file only
    assert s.batch_size == 11  # env beats file
    assert s.topic_prefix == "flag."  # flag beats both
    assert s.web_port == 6066  # None flags are ignored


def test_toml_and_json_files_and_nested_env(tmp_path, monkeypatch):
    t = tmp_path / "sw.toml"
    t.write_text('profile = "embedded"\n[kafka]\nsecurity_protocol = "SSL"\n')
    monkeypatch.setenv("STREAMWARDEN_CONFIG", str(t))
    monkeypatch.setenv("STREAMWARDEN_DETECTORS", '["descriptors"]')
    s = Settings()
    assert s.embedded and s.kafka.security_protocol == "SSL" and s.detectors == ["descriptors"]
    assert s.effective_replication_factor == 1


def test_secrets_are_never_printed():
    s = Settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": "hunter2"})
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()
    assert kafka_clients.security(s)["sasl_plain_password"] == "hunter2"


def test_bad_settings_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(ValidationError, match="batch_size"):
        Settings(batch_size=0)
    with pytest.raises(ValidationError, match="SASL needs"):
        Settings(kafka={"security_protocol": "SASL_PLAINTEXT"})
    with pytest.raises(ValidationError, match="unknown_option"):
        Settings(unknown_option=1)
    with pytest.raises(ValidationError, match="embedding_precision"):
        Settings(embedding_precision="bf16")
    monkeypatch.setenv("STREAMWARDEN_EMBEDDING_PRECISION", "fp32")
    assert Settings().embedding_precision == "fp32"
    monkeypatch.delenv("STREAMWARDEN_EMBEDDING_PRECISION")
    bad = tmp_path / "sw.ini"
    bad.write_text("x=1")
    monkeypatch.setenv("STREAMWARDEN_CONFIG", str(bad))
    with pytest.raises(ValueError, match="must be .yaml"):
        Settings()


def test_tls_and_sasl_reach_every_kafka_client(tmp_path, monkeypatch):
    """The tap, the worker (faust), the policy agent, the kill-switch CLI, the gateway's watcher and
    the readers all get the same TLS/SASL settings."""
    import ssl
    import subprocess

    import faust
    import kafka

    from streams.actions import log as action_log
    from streams.kafka_clients import faust_options, producer_config

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ],
        check=True,
        capture_output=True,
    )
    s = Settings(
        kafka={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "sw",
            "sasl_password": "pw",
            "ssl_cafile": str(cert),
            "ssl_certfile": str(cert),
            "ssl_keyfile": str(key),
        }
    )
    expected = {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "sw",
        "sasl_plain_password": "pw",
        "ssl_cafile": str(cert),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
    }
    assert expected.items() <= producer_config(s).items()  # tap, agent, CLI, gateway producers
    seen = {}
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda **kw: seen.setdefault("consumer", kw))
    action_log.consumer(s, "x")  # agent, control watcher, kill-switch status, readers
    assert expected.items() <= seen["consumer"].items()
    creds = faust_options(s)["broker_credentials"]  # the worker
    assert isinstance(creds, faust.SASLCredentials) and creds.username == "sw" and creds.mechanism.value == "SCRAM-SHA-512"
    assert isinstance(creds.ssl_context, ssl.SSLContext)
    tls_only = faust_options(Settings(kafka={"security_protocol": "SSL", "ssl_cafile": str(cert)}))["broker_credentials"]
    assert isinstance(tls_only, faust.SSLCredentials)
    assert faust_options(Settings())["broker_credentials"] is None


def test_the_commit_interval_follows_the_metrics_window_unless_set():
    from streams.kafka_clients import faust_options

    assert faust_options(Settings(metrics_window_s=10))["broker_commit_interval"] == 2.8
    assert faust_options(Settings(metrics_window_s=1))["broker_commit_interval"] == 1
    assert faust_options(Settings(metrics_window_s=0.1))["broker_commit_interval"] == 0.5
    assert faust_options(Settings(metrics_window_s=1, commit_interval_s=30))["broker_commit_interval"] == 30


def test_a_worker_takes_its_share_of_the_cores_it_may_run_on(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert Settings().cpu_threads() == 8
    assert Settings(workers_per_host=2).cpu_threads() == 4
    assert Settings(workers_per_host=3).cpu_threads() == 2
    assert Settings(workers_per_host=16).cpu_threads() == 1  # never none
    assert Settings(workers_per_host=2, torch_threads=3).cpu_threads() == 3  # set outright
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {2, 3})  # e.g. taskset: two of the eight
    assert Settings().cpu_threads() == 2


def test_the_onnx_sessions_take_the_configured_thread_count_and_do_not_spin(monkeypatch):
    import onnxruntime

    from detectors import embeddings
    from detectors.nli import NLIScorer

    seen = []
    real = onnxruntime.InferenceSession

    def spy(path, options=None, providers=None):
        seen.append((options.intra_op_num_threads, options.get_session_config_entry("session.intra_op.allow_spinning")))
        return real(path, options, providers=providers)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    monkeypatch.setattr(embeddings, "_onnx_threads", None)
    embeddings.configure(threads=1)
    scorer = NLIScorer()  # not the shared one: a fresh session
    scorer.probabilities(["A cat sleeps."], ["An animal rests."])
    embeddings.EmbeddingService(backend="onnx").encode(["A cat sleeps."])  # nor here
    assert seen == [(1, "0"), (1, "0")]  # idle threads sleep: the cores are shared with the rest of the worker


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_the_worker_fetches_with_short_waits_on_the_embedded_broker_only(profile):
    """tansu holds a waiting fetch to its end instead of answering when a record arrives, so on the embedded broker
    the worker's faust consumer (whose wait faust fixes at 1.5 s) waits 100 ms at most; on Kafka, which answers at
    once, it keeps faust's wait. The kafka-python readers keep their own either way."""
    from streams.worker.app import Worker

    settings = Settings(profile=profile, bootstrap="127.0.0.1:1", app_id=f"fetch-{profile}")
    assert "fetch_max_wait_ms" not in kafka_clients.consumer_config(settings, "reader")
    worker = Worker(settings)
    worker.app.finalize()
    thread = worker.app.consumer._new_consumer_thread()

    async def fetch_wait():  # aiokafka makes its consumer in a running loop; built, never started: nothing connects
        consumer = thread._create_worker_consumer(worker.app.transport)
        await consumer.stop()
        return consumer._fetch_max_wait_ms

    expected = kafka_clients.EMBEDDED_FETCH_MAX_WAIT_MS if profile == "embedded" else 1500
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(fetch_wait()) == expected
    finally:
        loop.close()
