"""Re-ask the deployed model for samples, on a budget, without stalling the stream.

Events that arrive without ``samples`` can still be checked for self-consistency: the
sampler picks a deterministic fraction of them (by event_id, so a replay picks the same),
within a token bucket of ``max_rps`` requests per second and at most ``max_in_flight``
requests at once, and asks the OpenAI-compatible endpoint for ``k`` samples of the same
prompt (one request, ``n=k``). Requests run as asyncio tasks beside the agent; their results
wait in a bounded queue that the worker drains on a timer, runs the consistency detector on,
and publishes. What the budget skips is counted, never silently dropped: sampling is
explicit configuration. A request that fails is counted and its event is not checked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

from streams.events.schema import InferenceEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplerBudget:
    fraction: float = 0.05
    max_rps: float = 2.0
    k: int = 4
    max_in_flight: int = 8
    max_ready: int = 1000


class Sampler:
    def __init__(self, client, budget: SamplerBudget, min_samples: int = 1):
        """``client``: anything with ``async acomplete(prompt, n) -> list[str]`` (ChatModel, LocalModel);
        ``min_samples``: the fewest usable samples a judgement needs (consistency's): a request that returns fewer
        is counted as ``too_few_samples``, and its event is not handed on."""
        self.client = client
        self.budget = budget
        self.min_samples = min_samples
        self.counts: Counter = Counter()
        self._tokens = budget.max_rps
        self._last = time.monotonic()
        self._in_flight: set[asyncio.Task] = set()
        self._ready: deque[InferenceEvent] = deque()

    def chosen(self, event: InferenceEvent) -> bool:
        h = int(hashlib.blake2b(event.event_id.encode(), digest_size=8).hexdigest(), 16)
        return h < self.budget.fraction * 2**64

    def _take_token(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.budget.max_rps, self._tokens + (now - self._last) * self.budget.max_rps)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False

    def offer(self, event: InferenceEvent) -> bool:
        """Start sampling ``event`` if it needs samples and the budget allows; never blocks. An event without a
        response (a failed request, say) has nothing to check: it is never sampled."""
        if event.samples or not event.response.strip() or not self.chosen(event):
            return False
        if len(self._in_flight) >= self.budget.max_in_flight or len(self._ready) >= self.budget.max_ready:
            self.counts["skipped_busy"] += 1
            return False
        if not self._take_token():
            self.counts["skipped_rate"] += 1
            return False
        task = asyncio.get_running_loop().create_task(self._sample(event))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        self.counts["requested"] += 1
        return True

    async def _sample(self, event: InferenceEvent) -> None:
        prompt = event.prompt if isinstance(event.prompt, str) else "\n".join(m.content for m in event.prompt if m.role == "user")
        try:
            samples = await self.client.acomplete(prompt, n=self.budget.k)
        except Exception as exc:  # noqa: BLE001 - a failed sample request is counted, not fatal
            self.counts["failed"] += 1
            log.warning("sampler: request failed: %s", type(exc).__name__)
            return
        usable = [s for s in samples if s and s.strip()]
        if len(usable) < self.min_samples:
            self.counts["too_few_samples"] += 1
            log.warning("sampler: %d usable samples of %d asked, fewer than %d", len(usable), self.budget.k, self.min_samples)
            return
        self.counts["sampled"] += 1
        self._ready.append(event.model_copy(update={"samples": usable}))

    def drain(self) -> list[InferenceEvent]:
        out = list(self._ready)
        self._ready.clear()
        return out

    async def close(self) -> None:
        for task in list(self._in_flight):
            task.cancel()
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)
