"""A small client for an OpenAI-compatible chat completions endpoint (vLLM, TGI, a gateway).

Used where streamwarden itself asks the deployed model: counterfactual probes, and the
self-consistency sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from pydantic import SecretStr


class ModelEndpointError(RuntimeError):
    pass


@dataclass
class ChatModel:
    base_url: str  # e.g. http://vllm:8000/v1
    model: str
    api_key: SecretStr | None = None
    timeout_s: float = 30.0
    temperature: float = 0.7
    max_tokens: int = 256

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return headers

    def _payload(self, prompt: str, n: int = 1) -> dict:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "n": n,
        }

    @staticmethod
    def _texts(body: dict) -> list[str]:
        try:
            return [c["message"]["content"] or "" for c in body["choices"]]
        except (KeyError, TypeError) as exc:
            raise ModelEndpointError("the endpoint's answer has no choices[].message.content") from exc

    def complete(self, prompt: str, n: int = 1) -> list[str]:
        url = self.base_url.rstrip("/") + "/chat/completions"
        try:
            r = httpx.post(url, json=self._payload(prompt, n), headers=self._headers(), timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise ModelEndpointError(f"{url}: {type(exc).__name__}") from exc
        if r.status_code != 200:
            raise ModelEndpointError(f"{url}: HTTP {r.status_code}")
        return self._texts(r.json())

    async def acomplete(self, prompt: str, n: int = 1, client: httpx.AsyncClient | None = None) -> list[str]:
        url = self.base_url.rstrip("/") + "/chat/completions"
        own = client is None
        client = client or httpx.AsyncClient(timeout=self.timeout_s)
        try:
            r = await client.post(url, json=self._payload(prompt, n), headers=self._headers())
        except httpx.HTTPError as exc:
            raise ModelEndpointError(f"{url}: {type(exc).__name__}") from exc
        finally:
            if own:
                await client.aclose()
        if r.status_code != 200:
            raise ModelEndpointError(f"{url}: HTTP {r.status_code}")
        return self._texts(r.json())

    def generate(self, prompt: str) -> str:
        """One answer: the ``generate(prompt) -> str`` callable detectors take."""
        return self.complete(prompt, 1)[0]
