"""Reference windows that outlive a worker: the references topic (compacted, one partition).

A drift detector tests each model version's live window against a reference it pins from that
version's first events. Kept only in memory, a reference would be re-pinned after every restart or
partition move, from traffic that may already have drifted, and the alarm would go silent. So the
worker persists every reference a detector pins (``KeepsReferences.pinned_references``) here, keyed by
detector and key, and a :class:`ReferenceWatcher` reads the topic back when the worker starts (the
worker waits for it, up to ``reference_load_timeout_s``, before it consumes events), then follows it:
a reference another worker pins (the drift merger's partition moved) and a person's reset
(``streamwarden references reset``: a tombstone) reach the detectors while they run.

What travels is numbers, never text: embedding vectors (float16) or descriptor columns (float64), with
the space they live in (``embedding:model:dimension``, ``merged:dimension``, the descriptor columns); a
detector restores only a reference of its own space. The value is a 4-byte header length, the header
(JSON) and the rows; a reference larger than a message may be is cut to an even sample of its rows.

Keys are JSON arrays (``["drift", model, version, field]``): model names may hold any character.
"""

from __future__ import annotations

import json
import logging
import struct
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from detectors.contracts import PinnedReference
from streams import kafka_clients
from streams.events.topics import MARKER_KEY_PREFIX, TopicWatcher, read_until_marker, topic_name
from streams.settings import Settings

log = logging.getLogger(__name__)

FORMAT = 1
_HEADER = struct.Struct(">I")


def reference_key(detector: str, key: tuple[str, ...]) -> bytes:
    return json.dumps([detector, *key], separators=(",", ":")).encode()


def parse_key(raw: bytes) -> tuple[str, tuple[str, ...]]:
    """(detector, key) of a record key; ValueError when it is not one of ours."""
    parts = json.loads(raw)
    if not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, str) for p in parts):
        raise ValueError("not a reference key")
    return parts[0], tuple(parts[1:])


def encode(ref: PinnedReference, producer: str, max_bytes: int = kafka_clients.BROKER_DEFAULT_MAX_MESSAGE_BYTES) -> bytes:
    """The record value of ``ref``: embedding vectors as float16, other rows as float64; at most ``max_bytes``
    (an even sample of the rows when all of them would not fit)."""
    rows = np.asarray(ref.rows)
    dtype = np.float16 if rows.dtype == np.float32 or rows.dtype == np.float16 else np.float64
    rows = rows.astype(dtype)
    header: dict[str, Any] = {
        "format": FORMAT,
        "detector": ref.detector,
        "key": list(ref.key),
        "space": ref.space,
        "pinned_at": ref.pinned_at,
        "producer": producer,
        "rows_pinned": int(rows.shape[0]),
    }
    row_bytes = max(1, rows[0].nbytes if len(rows) else 1)
    # What the rows may take: the message less the header (its shape written with room to spare), the key
    # (the same names again) and the record's own overhead.
    sized = json.dumps({**header, "dtype": "float64", "shape": [10**9, 10**9]}, separators=(",", ":")).encode()
    room = max_bytes - 4 - len(sized) - len(reference_key(ref.detector, ref.key)) - 512
    if rows.nbytes > room:
        keep = max(2, room // row_bytes)
        picked = np.sort(np.random.default_rng(0).choice(len(rows), size=keep, replace=False))
        rows = rows[picked]
        log.info("a %s reference of %d rows kept as an even sample of %d to fit a message", ref.detector, header["rows_pinned"], keep)
    header.update(dtype=np.dtype(dtype).name, shape=list(rows.shape))
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(head)) + head + rows.tobytes()


def decode(value: bytes) -> PinnedReference:
    """ValueError (or KeyError, TypeError, struct.error) on a value that is not a reference."""
    (n,) = _HEADER.unpack_from(value, 0)
    header = json.loads(value[4 : 4 + n])
    if not isinstance(header, dict) or not isinstance(header.get("key"), list):
        raise ValueError("not a reference header")
    if header.get("format") != FORMAT:
        raise ValueError(f"reference format {header.get('format')!r}")
    dtype = np.dtype(header["dtype"])
    if dtype not in (np.float16, np.float64):
        raise ValueError("reference rows of an unknown type")
    shape = tuple(int(d) for d in header["shape"])
    rows = np.frombuffer(value[4 + n :], dtype=dtype).reshape(shape)
    rows = rows.astype(np.float32 if dtype == np.float16 else np.float64)
    return PinnedReference(
        str(header["detector"]), tuple(str(k) for k in header["key"]), str(header["space"]), rows, float(header["pinned_at"])
    )


class ReferenceWatcher(TopicWatcher):
    """Reads the references topic to its end (then ``ready`` is set), hands every reference to ``on_reference``
    and every tombstone to ``on_reset(detector, key, at)`` (``at``: the tombstone's time, unix seconds), and keeps following the topic in a background thread.
    ``references`` holds the latest of each key (what ``streamwarden references list`` shows). When it has to
    read the topic again (the broker went away), the callbacks hear only the records past those they heard:
    an old tombstone replayed would reset a reference pinned since."""

    thread_name = "streamwarden-references"

    def __init__(
        self,
        settings: Settings,
        on_reference: Callable[[PinnedReference], None] | None = None,
        on_reset: Callable[[str, tuple[str, ...], float | None], None] | None = None,
        poll_ms: int = 500,
    ):
        super().__init__(settings, poll_ms)
        self._on_reference = on_reference
        self._on_reset = on_reset
        self.references: dict[tuple[str, tuple[str, ...]], PinnedReference] = {}
        self.skipped = 0  # records that are not references (counted, never logged with their content)
        self._delivered = -1  # the offset of the last record handed to the callbacks

    def read_all(self, timeout_s: float = 30.0) -> dict[tuple[str, tuple[str, ...]], PinnedReference]:
        """Read to the end once, in this thread (the CLI); returns the latest reference of each key."""
        cons = self._read(timeout_s)
        cons.close()
        return self.references

    def _read(self, timeout_s: float):
        self.references = {}
        marker = MARKER_KEY_PREFIX + uuid.uuid4().hex.encode()
        return read_until_marker(self.settings, "references", marker, None, self._record, timeout_s, with_offsets=True)

    def _record(self, key: bytes | None, value: bytes | None, offset: int = -1, timestamp_ms: int | None = None) -> None:
        if key is None or key.startswith(MARKER_KEY_PREFIX):
            return
        heard = offset >= 0 and offset <= self._delivered  # handed over before this read of the topic
        self._delivered = max(self._delivered, offset)
        try:
            detector, parts = parse_key(key)
            ref = decode(value) if value is not None else None
            if ref is not None and (ref.detector, ref.key) != (detector, parts):
                raise ValueError("a reference filed under another key")
        except (ValueError, KeyError, TypeError, AttributeError, struct.error):
            self.skipped += 1
            log.warning("references topic: a record that is not a reference was skipped")
            return
        try:
            if ref is None:
                self.references.pop((detector, parts), None)
                if self._on_reset is not None and not heard:
                    self._on_reset(detector, parts, timestamp_ms / 1000.0 if timestamp_ms is not None and timestamp_ms >= 0 else None)
                return
            self.references[(ref.detector, ref.key)] = ref
            if self._on_reference is not None and not heard:
                self._on_reference(ref)
        except Exception as exc:  # noqa: BLE001 - a callback's failure must not stop the reading
            log.error("references topic: handing a record over failed (%s)", type(exc).__name__)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                # A long topic may take longer than the worker waits: it starts meanwhile and adopts what arrives.
                cons = self._read(timeout_s=max(120.0, self.settings.reference_load_timeout_s))
            except Exception as exc:  # noqa: BLE001 - the worker goes on (its detectors pin from traffic) and this retries
                if self.error is None:
                    log.warning(
                        "the references topic could not be read (%s): retrying; meanwhile references are pinned from traffic",
                        type(exc).__name__,
                    )
                self.error = exc
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.error = None
            self.ready.set()
            log.info("references topic read: %d reference(s)", len(self.references))
            try:
                self._follow(cons, lambda m: self._record(m.key, m.value, m.offset, m.timestamp))
            except Exception as exc:  # noqa: BLE001 - read it again from the start (the latest of each key wins)
                log.warning("following the references topic failed (%s); reading it again", type(exc).__name__)
                self._stop.wait(backoff)
            finally:
                cons.close()


def publish_resets(settings: Settings, keys: list[tuple[str, tuple[str, ...]]], timeout_s: float = 30.0) -> int:
    """Tombstones for ``keys`` (detector, key): every worker forgets those references and pins new ones."""
    topic = topic_name(settings, "references")
    prod = kafka_clients.producer(settings, "streamwarden-references-reset", linger_ms=0)
    try:
        for detector, key in keys:
            prod.send(topic, key=reference_key(detector, key), value=None, partition=0).get(timeout=timeout_s)
    finally:
        prod.close(timeout=5)
    return len(keys)
