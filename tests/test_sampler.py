"""Re-sampling through an OpenAI-compatible endpoint (a local stand-in) for events without samples."""

import asyncio
import threading

import pytest

from streams.events.topics import ensure_topics
from streams.local.outputs import OutputReader, OutputTally
from streams.tap import Tap
from streams.worker.model_client import ChatModel
from streams.worker.sampler import Sampler, SamplerBudget

from .conftest import make_event, wait_for
from .model_standin import ModelStandIn

FACTS = iter(range(10**6))


def inventive_model(prompt: str) -> str:
    n = next(FACTS)
    return f"Answer {n}: it was founded in {1900 + n % 100} by founder{n} in city{n * 7}."


def test_budget_fraction_rate_and_concurrency_are_respected():
    async def scenario():
        with ModelStandIn(inventive_model) as model:
            s = Sampler(ChatModel(model.base_url, "m"), SamplerBudget(fraction=0.5, max_rps=5, k=3, max_in_flight=2))
            events = [make_event() for _ in range(200)]
            chosen = [e for e in events if s.chosen(e)]
            assert 60 < len(chosen) < 140  # about half, by event_id
            for e in events:
                s.offer(e)
            assert s.counts["requested"] <= 5  # the bucket starts with max_rps tokens
            assert s.counts["requested"] + s.counts["skipped_rate"] + s.counts["skipped_busy"] == len(chosen)
            await asyncio.sleep(0.5)
            ready = s.drain()
            assert all(len(e.samples) == 3 for e in ready) and len(ready) == s.counts["sampled"]
            assert s.offer(make_event(samples=["a", "b"])) is False  # already has samples
            await s.close()

    asyncio.run(scenario())


def test_an_event_without_a_response_is_never_sampled_and_too_few_samples_are_counted():
    async def scenario():
        answers = iter(["A full answer.", "", "  "])
        with ModelStandIn(lambda prompt: next(answers, "")) as model:
            s = Sampler(ChatModel(model.base_url, "m"), SamplerBudget(fraction=1.0, max_rps=50, k=3), min_samples=2)
            assert s.offer(make_event(response="")) is False and s.offer(make_event(response="  ")) is False
            assert model.requests == [] and s.counts["requested"] == 0
            assert s.offer(make_event()) is True
            for _ in range(100):
                if s.counts["too_few_samples"] or s.counts["sampled"]:
                    break
                await asyncio.sleep(0.05)
            # One usable sample of three: fewer than consistency needs, so counted, and the event is not handed on.
            assert s.counts["too_few_samples"] == 1 and s.counts["sampled"] == 0 and s.drain() == []
            await s.close()

    asyncio.run(scenario())


@pytest.mark.integration
def test_worker_resamples_and_flags_inconsistent_events(settings, start_worker):
    ensure_topics(settings)
    tally = OutputTally()
    lock = threading.Lock()

    def on_record(rec):
        with lock:
            tally.add(rec)

    with ModelStandIn(inventive_model) as model:
        worker = start_worker(
            settings,
            STREAMWARDEN_MODEL_ENDPOINT=model.base_url,
            STREAMWARDEN_MODEL_ENDPOINT_MODEL="chat-large",
            STREAMWARDEN_SAMPLER_FRACTION="1.0",
            STREAMWARDEN_SAMPLER_MAX_RPS="50",
            STREAMWARDEN_SAMPLER_MAX_IN_FLIGHT="32",  # the default 8 would skip (and count) most of one batch
            STREAMWARDEN_DETECTORS='["descriptors", "consistency"]',
        )
        reader = OutputReader(settings, ("findings", "metrics"), on_record).start()
        events = [
            make_event(prompt="Who founded the company?", response="It was founded in 1931 by Ada Lovelace in Paris.") for _ in range(20)
        ]
        # One sample is too few to judge, and the sampler leaves an event that has samples alone: unjudged.
        unsampled = [make_event(response="It was founded in 1931.", samples=["It was founded in 1931."]) for _ in range(5)]
        with Tap(settings=settings) as tap:
            for e in events + unsampled:
                tap.record(e)
        try:
            wait_for(
                lambda: tally.findings_by_kind.get("consistency.inconsistent_response", 0) >= 20 and tally.events_processed >= 25,
                timeout=90,
                message="findings on re-sampled events",
            )
        except AssertionError:
            print("\n".join(l for l in worker.log().splitlines() if "HTTP Request" not in l)[-6000:])
            raise
        finally:
            reader.stop()
        assert len(model.requests) == 20 and all(r["body"]["n"] == 4 for r in model.requests)
    assert set(tally.finding_event_ids) == {e.event_id for e in events}
    # The re-sampled events count as judged (their judgement came later); only the unsampled five do not.
    assert tally.events_processed == 25 and tally.unjudged["consistency"] == 5, tally.unjudged


def test_a_local_causal_lm_path_is_a_sample_source(tmp_path):
    """Plumbing: a tiny random GPT-2 saved locally (no generative model ships offline here)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from streams.worker.model_client import LocalModel

    words = ["[UNK]", "<eos>", "who", "founded", "the", "company", "?", "it", "was", "in", "paris"]
    tk = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", eos_token="<eos>").save_pretrained(tmp_path)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(words), n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)

    async def scenario():
        s = Sampler(LocalModel(str(tmp_path), max_new_tokens=5), SamplerBudget(fraction=1.0, max_rps=10, k=3))
        e = make_event(prompt="who founded the company ?")
        assert s.offer(e)
        for _ in range(100):
            if s.counts["sampled"]:
                break
            await asyncio.sleep(0.05)
        (ready,) = s.drain()
        assert len(ready.samples) == 3 and all(isinstance(x, str) for x in ready.samples)

    asyncio.run(scenario())


def test_a_sampler_asking_for_fewer_samples_than_consistency_needs_is_a_configuration_error():
    from streams.errors import ConfigurationError
    from streams.settings import Settings
    from streams.worker.app import Worker

    settings = Settings(
        profile="embedded",
        bootstrap="127.0.0.1:1",
        app_id="sampler-config-test",
        detectors=["consistency"],
        detector_options={"consistency": {"min_samples": 5}},
        model_endpoint="http://127.0.0.1:1/v1",
        model_endpoint_model="m",
        sampler_fraction=0.1,
        sampler_k=4,
    )
    with pytest.raises(ConfigurationError, match="sampler_k 4 is below consistency's min_samples 5"):
        Worker(settings)
    assert Worker(settings.model_copy(update={"sampler_k": 5})).sampler.min_samples == 5
