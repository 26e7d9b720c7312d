"""A small client for an OpenAI-compatible chat completions endpoint (vLLM, TGI, a gateway).

Used where streamwarden itself asks the deployed model: counterfactual probes, and the
self-consistency sampler.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr

from streams.errors import UpstreamError


class ModelEndpointError(UpstreamError):
    """The model endpoint failed or answered without content."""


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


class LocalModel:
    """A local Hugging Face causal LM (a path, never downloaded) as a sample source, on CUDA when present.

    ``acomplete`` runs generation in a thread so the stream's event loop never waits on it.
    """

    def __init__(self, path: str, device: str | None = None, max_new_tokens: int = 128, temperature: float = 0.8):
        from pathlib import Path

        if not Path(path).exists():
            raise ValueError(f"local model path {path!r} does not exist (models are never downloaded)")
        self.path = path
        self._device = device
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self):
        with self._lock:
            if self._model is None:
                import torch
                from transformers import AutoModelForCausalLM, AutoTokenizer

                device = self._device or ("cuda" if torch.cuda.is_available() else "cpu")
                dtype = torch.float16 if device.startswith("cuda") else torch.float32
                self._tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(self.path, local_files_only=True, dtype=dtype)
                self._model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types .to() for modules only
                self.device = device
            return self._model, self._tokenizer

    def complete(self, prompt: str, n: int = 1) -> list[str]:
        import torch

        model, tok = self._load()
        inputs = tok(prompt, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                do_sample=True,
                temperature=self.temperature,
                max_new_tokens=self.max_new_tokens,
                min_new_tokens=1,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
            )
        prompt_len = inputs["input_ids"].shape[1]
        return [tok.decode(seq[prompt_len:], skip_special_tokens=True) for seq in out]

    async def acomplete(self, prompt: str, n: int = 1) -> list[str]:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.complete, prompt, n)

    def generate(self, prompt: str) -> str:
        return self.complete(prompt, 1)[0]
