"""One settings class for every streamwarden process.

Values come, highest precedence first, from command-line flags (the CLI passes them as
init arguments), ``STREAMWARDEN_*`` environment variables, an optional YAML/TOML/JSON file
(``--config FILE`` or ``STREAMWARDEN_CONFIG``), and the defaults below. Secrets are
``SecretStr`` and never printed.

Two profiles: ``production`` keeps Kafka's own defaults (idempotent producer, replication
as the cluster says); ``embedded`` is for the in-memory tansu broker of the demo and the
tests, which lacks InitProducerId (so no idempotence, no exactly-once) and runs one replica.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streams.errors import ConfigurationError

CONFIG_ENV = "STREAMWARDEN_CONFIG"


class KafkaSecurity(BaseSettings):
    """TLS and SASL settings, shared by the tap and the worker."""

    model_config = SettingsConfigDict(extra="forbid")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="STREAMWARDEN_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    profile: Literal["production", "embedded"] = "production"
    bootstrap: str = Field(default="localhost:9092", description="Kafka bootstrap servers, comma-separated host:port.")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)

    # Topics.
    topic_prefix: str = Field(default="streamwarden.", pattern=r"^[A-Za-z0-9._-]*$")
    input_partitions: int = Field(default=6, ge=1, description="Partitions of the inference topic: the most workers that share it.")
    output_partitions: int = Field(default=3, ge=1)
    replication_factor: int | None = Field(default=None, ge=1, description="None: the cluster's default.")

    # Worker.
    app_id: str = "streamwarden-worker"
    detectors: list[str] = Field(
        default_factory=lambda: [
            "descriptors",
            "pii",
            "bias",
            "consistency",
            "grounding",
            "injection",
            "toxicity",
            "drift",
            "descriptor_drift",
        ]
    )
    reports_dir: Path = Field(default=Path("reports"), description="Where drift reports (HTML) are written.")
    state_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "streamwarden",
        description="Where processes keep local state (the worker's faust data directory); never the current directory.",
    )
    detector_options: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Keyword options per detector, e.g. {'pii': {'ner': True}} (NER with its default model) or {'pii': {'ner_model': 'NAME'}}.",
    )
    pii_hash_key: SecretStr | None = Field(
        default=None,
        description="Key of the HMAC in PII findings (correlate a value across findings without seeing it). "
        "Random per process when unset: set it to compare hashes across workers and restarts.",
    )
    batch_size: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="Events per micro-batch at most: a batch closes when it has this many, or batch_within_s after the "
        "batch before it was done. A backlog is worked off faster in larger batches (bench/RESULTS.md: one worker on 2 "
        "cores, median sustained 1,650 events/s in batches of 256 against 1,404 in batches of 64); what grows with the "
        "batch: latency (p50 0.39-0.47 against 0.23-0.29 s at half the burst's rate), ~70 MiB of memory, the events one "
        "failure touches, the spacing of what runs once a batch (README, Micro-batches).",
    )
    batch_within_s: float = Field(default=0.5, gt=0, le=60)
    max_event_bytes: int = Field(default=1_000_000, ge=1_024)
    deadletter_payload: Literal["redacted", "original"] = Field(
        default="redacted",
        description="'redacted': a dead letter's body is the record's text with every PII value and secret masked "
        "(the monitor stores no personal data; the original stays at its source offset in the inference topic for "
        "that topic's retention). 'original': the exact bytes, replayable as they are, as sensitive as the inference topic.",
    )
    embedding_backend: Literal["auto", "onnx", "torch"] = Field(
        default="auto",
        description="Sentence embeddings: 'onnx' (int8, onnxruntime, CPU), 'torch' (sentence-transformers; any model, CUDA), "
        "'auto': onnx on a CPU when the model has an ONNX file (the default model does), else torch.",
    )
    embedding_precision: Literal["auto", "fp16", "fp32"] = Field(
        default="auto",
        description="The torch backend's weights: 'auto' (fp16 on CUDA, fp32 on the CPU), 'fp16' (CUDA only), 'fp32'.",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="CPU threads torch and onnxruntime (embeddings, NLI) may use in this worker. "
        "Default: the cores this process may run on, divided by workers_per_host.",
    )
    workers_per_host: int = Field(
        default=1,
        ge=1,
        description="Workers that share this host's cores: each takes cores / workers_per_host threads "
        "(unless torch_threads is set), so that they do not fight for the same cores.",
    )
    stream_buffer_events: int = Field(
        default=1024, ge=1, description="Events a worker holds in memory ahead of its detectors; the rest waits in Kafka (lag)."
    )
    metrics_window_s: float = Field(default=10.0, gt=0)
    shutdown_timeout_s: float = Field(
        default=25.0,
        gt=0,
        le=3_600,
        description="After SIGTERM or SIGINT the worker stops cleanly (its last commit, its metrics) within this; "
        "past it (the broker unreachable, a detector stuck) it exits with status 75 without a clean stop, and the "
        "partitions' next owner processes its uncommitted batches again. Under an orchestrator's grace period (30 s).",
    )
    commit_interval_s: float | None = Field(
        default=None,
        gt=0,
        description="How often the worker commits its input offsets (metrics count a batch at its commit; after a crash "
        "the next owner re-processes what was not committed). Default: the metrics window, between 0.5 and 2.8 s.",
    )
    drift_interval_s: float = Field(default=30.0, gt=0, description="With drift mode 'publish': how often workers publish samples.")
    drift_merge_window: int = Field(default=500, ge=20, description="Rows of the merged current window.")
    drift_merge_intervals: int = Field(default=4, ge=1, description="Intervals the merged window spans.")
    keep_references: bool = Field(
        default=True,
        description="Persist the reference windows drift detectors pin (numbers, never text) to the compacted references "
        "topic and restore them when a worker starts, so that a restart or a partition move during a drift does not "
        "re-pin the reference from the drifted traffic. Off: every start re-pins from live traffic.",
    )
    reference_load_timeout_s: float = Field(
        default=15.0,
        gt=0,
        le=600,
        description="How long a starting worker waits to read the references topic before it consumes events; past it "
        "the worker starts anyway (logged) and adopts the references as they arrive, for versions not yet pinned.",
    )
    web_host: str = Field(default="127.0.0.1", description="Bind address of the worker's web server (metrics, reports).")
    web_port: int = Field(default=6066, ge=0, le=65535)
    worker_id: str | None = Field(default=None, description="Defaults to host:pid.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # The deployed model, where streamwarden asks it itself (probes, sampling): OpenAI-compatible.
    model_endpoint: str | None = Field(default=None, description="Base URL, e.g. http://vllm:8000/v1.")
    model_endpoint_model: str | None = Field(default=None, description="The model name the endpoint serves.")
    model_endpoint_api_key: SecretStr | None = None
    sampler_local_model: str | None = Field(
        default=None, description="A local causal LM path to sample from instead of the endpoint (CUDA when present)."
    )
    sampler_fraction: float = Field(
        default=0.0, ge=0, le=1, description="Share of events without samples to re-ask the model for (0: off)."
    )
    sampler_max_rps: float = Field(default=2.0, gt=0, description="Most sample requests per second per worker.")
    sampler_k: int = Field(default=4, ge=2, le=20, description="Samples per request.")
    sampler_max_in_flight: int = Field(default=8, ge=1)

    # Policy agent and actions.
    policy_file: Path | None = Field(default=None, description="The policy YAML (default: the packaged default policy).")
    policy_eval_interval_s: float = Field(default=1.0, gt=0, le=60)
    policy_web_host: str = "127.0.0.1"
    policy_web_port: int = Field(
        default=6067, ge=0, le=65535, description="The policy agent's web UI (incidents), /metrics and /healthz (0: none)."
    )
    alertmanager_urls: list[str] = Field(
        default_factory=list, description="Alertmanager base URLs (its v2 API), e.g. http://alertmanager:9093."
    )
    alert_webhooks: list[str] = Field(default_factory=list, description="Generic webhook URLs that get every action, signed.")
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the X-Streamwarden-Signature header on every webhook (unsigned when unset)."
    )
    rollback_webhook_url: str | None = Field(default=None, description="The deployment controller's rollback endpoint.")
    webhook_attempts: int = Field(default=6, ge=1, le=20, description="Tries per webhook call (backoff 0.5 s doubling).")
    alert_repeat_s: float = Field(default=60.0, gt=0, description="How often firing alerts are re-sent to Alertmanager.")
    policy_public_url: str | None = Field(
        default=None,
        description="The policy agent's web UI as people reach it (put in alerts as the incident link); "
        "default http://<policy_web_host>:<policy_web_port>.",
    )
    incident_max: int = Field(default=200, ge=1, le=100_000, description="Incidents the policy agent's web UI keeps (the oldest go first).")
    incident_findings_max: int = Field(
        default=200, ge=1, le=100_000, description="Findings kept per incident (the first ones; the rest are counted)."
    )
    incident_chart_points: int = Field(default=240, ge=16, le=10_000, description="Points of an incident's metric chart.")
    incident_lookback_s: float = Field(
        default=86_400.0, gt=0, description="How far back the agent re-reads the findings topic on start (the incidents' evidence)."
    )

    # Gateway.
    gateway_host: str = Field(default="127.0.0.1", description="Bind address of the gateway.")
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_upstream_url: str | None = Field(
        default=None, description="The model server's OpenAI-compatible base URL, e.g. http://vllm:8000/v1."
    )
    gateway_upstream_api_key: SecretStr | None = None
    gateway_fallback_url: str | None = Field(default=None, description="Where 'model:NAME' fallbacks are served (default: the upstream).")
    gateway_admin_token: SecretStr | None = Field(default=None, description="Bearer token of the admin endpoints (disabled when unset).")
    gateway_route: str = Field(default="gateway", description="The route tapped events carry.")
    gateway_model_versions: dict[str, str] = Field(default_factory=dict, description="model -> deployed version, for tapped events.")
    gateway_models: list[str] = Field(
        default_factory=list,
        description="The models the gateway serves: its metrics label these by name (so do gateway_model_versions' models "
        "and models with a kill switch state); any other name a client sends is labelled 'other'.",
    )
    gateway_timeout_s: float = Field(default=120.0, gt=0)

    # OpenTelemetry in: GenAI spans (OTLP traces) from a Collector's kafka exporter or the OTLP/HTTP receiver.
    otlp_enabled: bool = Field(
        default=True, description="The worker also consumes the OTLP topic (GenAI spans), beside the inference topic."
    )
    otlp_topic: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]+$",
        description="The OTLP traces topic (default '<topic_prefix>otlp'; a Collector's kafka exporter writes 'otlp_spans' unless told otherwise).",
    )
    otlp_encoding: Literal["otlp_proto", "otlp_json"] = Field(
        default="otlp_proto", description="How records of the OTLP topic are encoded (the kafka exporter's traces.encoding)."
    )
    otlp_model_version_attributes: list[str] = Field(
        default_factory=lambda: ["service.version"],
        description="Attributes whose value is an event's model_version, first found wins, on the span then its resource "
        "(e.g. add 'gen_ai.response.model' to use the exact model snapshot the provider answered with).",
    )
    otlp_route_attributes: list[str] = Field(
        default_factory=lambda: ["deployment.environment.name", "deployment.environment"],
        description="Attributes whose value is an event's route, first found wins, on the span then its resource.",
    )
    otlp_receiver_host: str = Field(
        default="127.0.0.1", description="Bind address of the OTLP/HTTP receiver (`streamwarden otlp receive`)."
    )
    otlp_receiver_port: int = Field(default=4318, ge=0, le=65535, description="Port of the OTLP/HTTP receiver (OTLP/HTTP's own default).")
    otlp_receiver_token: SecretStr | None = Field(
        default=None, description="Bearer token the receiver requires (Authorization: Bearer <token>); open when unset."
    )
    otlp_receiver_max_bytes: int = Field(
        default=8 * 1024 * 1024, ge=1024, description="Largest request body the receiver takes, compressed and after gzip (413 beyond)."
    )

    # Tap.
    tap_buffer: int = Field(default=10_000, ge=1, description="Events the tap holds before it starts dropping.")
    tap_linger_ms: int = Field(default=20, ge=0)

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Settings:
        k = self.kafka
        if k.security_protocol.startswith("SASL") and not (k.sasl_mechanism and k.sasl_username and k.sasl_password):
            raise ValueError("SASL needs kafka.sasl_mechanism, kafka.sasl_username and kafka.sasl_password")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls), file_secret_settings)

    def cpu_threads(self) -> int:
        """Threads for this worker's torch and onnxruntime: ``torch_threads``, else the cores this process may run
        on (its CPU affinity) divided among ``workers_per_host`` workers, at least one."""
        if self.torch_threads:
            return self.torch_threads
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            cores = os.cpu_count() or 1
        return max(1, cores // self.workers_per_host)

    def detector_kwargs(self) -> dict[str, dict[str, Any]]:
        """``detector_options`` with the secrets each detector needs filled in."""
        out = {name: dict(opts) for name, opts in self.detector_options.items()}
        if self.pii_hash_key is not None and "pii" in self.detectors:
            out.setdefault("pii", {})["hash_key"] = self.pii_hash_key.get_secret_value().encode()
        if "descriptor_drift" in self.detectors:
            out.setdefault("descriptor_drift", {}).setdefault("reports_dir", str(self.reports_dir))
            # Its evidently tests and reports on a thread of its own: a batch pays only for the descriptors
            # (the tests made the batches' p99), and its findings leave with the next batch or the worker's timer.
            out["descriptor_drift"].setdefault("background", True)
        if "drift" in self.detectors:
            # The same for the embedding drift's MMD tests: their matrix products run beside the batch's Python work.
            out.setdefault("drift", {}).setdefault("background", True)
        if "toxicity" in self.detectors:
            # Toxicity's embedding head takes at most half the wall clock: under load it judges a fair sample (the
            # rest counted unjudged, and the toxic-rate rule divides by the judged) instead of falling behind.
            out.setdefault("toxicity", {}).setdefault("head_time_share", 0.5)
        return out

    @property
    def otlp_topic_name(self) -> str:
        return self.otlp_topic or f"{self.topic_prefix}otlp"

    @property
    def embedded(self) -> bool:
        return self.profile == "embedded"

    @property
    def effective_replication_factor(self) -> int | None:
        return 1 if self.embedded else self.replication_factor


class _FileSource(PydanticBaseSettingsSource):
    """Reads the optional config file named by ``STREAMWARDEN_CONFIG``."""

    def get_field_value(self, field, field_name):  # pragma: no cover - whole-file source
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            return {}
        return load_config_file(Path(path))


def load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigurationError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    parsers = {
        ".yaml": lambda s: yaml.safe_load(s) or {},
        ".yml": lambda s: yaml.safe_load(s) or {},
        ".toml": tomllib.loads,
        ".json": json.loads,
    }
    if suffix not in parsers:
        raise ConfigurationError(f"config file must be .yaml, .yml, .toml or .json: {path}")
    try:
        data = parsers[suffix](text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigurationError(f"config file {path} does not parse: {type(exc).__name__}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"config file must hold a mapping at the top: {path}")
    return data


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment and config file, with explicit values (CLI flags) on top.

    ``None`` overrides are ignored, so optional CLI flags can be passed straight through.
    Raises :class:`ConfigurationError` naming each bad field (never its value: it may be a secret).
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
            for e in exc.errors(include_url=False, include_input=False, include_context=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
