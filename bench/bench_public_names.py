"""Public figure or leaked name: do gazetteer-free context cues tell them apart? (issue 14)

A name in a response that the user did not type is a PII leak today. Most names in answers are
public figures (the person asked about), so NER stays opt-in. This bench asks whether cues in the
text itself, with no list of famous people, could call a name public and spare it, without sparing
the private names that matter.

Cues (all in the text around the name, no gazetteer):
* ROLE: a role or fame word in the same sentence (president, singer, novel, directed by, CEO...);
* BIO: Wikipedia-style biography syntax in the same sentence: "(born ...", "(1820-1876)",
  "was an English lawyer", "born in 1950";
* PRIVATE guard: what a leak looks like, which vetoes "public": contact details of the pattern
  types (e-mail, phone, card, SSN, IBAN, IP) or an address form in the same text, or first- and
  second-person ties ("my name is", "my kid", "I'm <name>", "Dear").
A name is called public when ROLE or BIO fires and the guard does not.

Data (read from ../shared/data, never copied):
* presidio_synth/synth_dataset_v2.json: gold PERSON spans, all of them fake (Faker) names. The
  templates put them in private contexts (a customer's account, an address label) or in
  public-figure contexts (a song review, a film's director): the template ids of each kind are
  listed below, a judgement made by reading the 89 templates with a PERSON; the rest are left out
  as unclear. Same source, same style, so the cue is tested on context alone.
* selfcheckgpt_wikibio: 60 GPT-3 biographies of people with a Wikipedia article (LLM output about
  public figures); PERSON mentions found by the NER model.
* factver_fever_eval: Wikipedia evidence sentences; PERSON mentions found by the NER model (nearly
  all people with an article).
* SYNTHETIC probe, generated here: the private-context names above, each with one of the job
  titles presidio_synth gives its fake people (TITLE spans), in the sentences an LLM writes about a
  person ("<name> is a <job> at <organisation>.", "<name> (born <year>) is a <job> from <city>.").
  It measures the failure that matters (a private person, written about the way public figures
  are, called public), not how often it happens.
There is no labelled set of real private people in such text, nor real traffic for name
frequency across conversations: both are gaps this bench cannot close. The ROLE words and the
guard's phrases were written after reading the presidio templates (the public-context templates'
"keynote", "tribute" and the like were left out again): the presidio rows are optimistic.

    .venv/bin/python bench/bench_public_names.py [--ner-model NAME] [--fever N]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from detectors.pii import DEFAULT_NER_MODEL, PIILeakDetector

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# presidio_synth v2 template ids with a PERSON, by context (see the docstring).
PRIVATE_TEMPLATES = {4, 10, 28, 29, 36, 38, 40, 43, 47, 48, 52, 53, 58, 60, 68, 69, 75, 76, 77, 78, 129, 130, 131, 136, 137, 138}
PRIVATE_TEMPLATES |= {139, 143, 144, 149, 150, 151, 152, 153, 154, 155, 167, 168, 169, 170, 171, 172, 188, 202}
PUBLIC_TEMPLATES = {85, 93, 94, 95, 97, 98, 99, 101, 103, 104, 105, 106, 107, 108, 109, 111, 112, 113, 116, 122, 127, 180, 181, 184}
PUBLIC_TEMPLATES |= {186, 197, 199}

ROLE = re.compile(
    r"(?i)\b(?:president|senator|minister|governor|mayor|king|queen|prince|princess|pope|emperor|actor|actress|singer|"
    r"songwriter|musician|rapper|band|guitarist|drummer|composer|producer|director|directed|starring|film|album|song|"
    r"recorded|concert|novel|novelist|author|writer|poet|painter|artist|journalist|footballer|player|athlete|coach|"
    r"champion|olympic|scientist|physicist|chemist|mathematician|philosopher|economist|politician|general|ceo|founder|"
    r"chairman|billionaire|celebrity|star|lawyer|judge|bishop|professor)\b"
)
BIO = re.compile(
    r"\(born\b|\(\s*(?:c\.\s*)?\d{3,4}\s*[-\u2013]\s*\d{3,4}\s*\)|\b(?:is|was)\s+an?\s+(?:[A-Z][a-z]+[- ])+[a-z]+|"
    r"\bborn\s+(?:on\s+)?(?:in\s+)?(?:\d{1,2}\s+)?(?:[A-Z][a-z]+\s+)?\d{4}|\bdied\s+(?:on|in)\b"
)
FIRST_SECOND_PERSON = re.compile(
    r"(?i)\b(?:my\s+name|my\s+(?:kid|child|son|daughter|partner|wife|husband|mother|father|grand\w+|boss)|i'?m\s+[A-Z]|"
    r"call\s+me|this\s+is\s+(?:mr|ms|mrs|dr)|dear\b|your\s+name|name:|address:|billing|account)"
)
ADDRESS = re.compile(r"(?i)\b\d{1,5}\s+\w+(?:\s+\w+)?\s+(?:street|st|avenue|ave|road|rd|lane|ln|drive|dr|blvd|apt|suite)\b")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])|\n+")


def sentence_of(text: str, start: int, end: int) -> str:
    bounds = [0, *(m.end() for m in _SENT.finditer(text)), len(text) + 1]
    for a, b in zip(bounds, bounds[1:]):
        if a <= start < b:
            return text[a : max(b, end)]
    return text


def cues(text: str, start: int, end: int, patterns: PIILeakDetector) -> dict[str, bool]:
    sent = sentence_of(text, start, end)
    sent_wo_name = sent.replace(text[start:end], " ")
    private = bool(FIRST_SECOND_PERSON.search(text) or ADDRESS.search(text) or patterns.find(text))
    role = bool(ROLE.search(sent_wo_name))
    bio = bool(BIO.search(sent))
    return {"ROLE": role, "BIO": bio, "PRIVATE guard": private, "public": (role or bio) and not private}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ner-model", default=DEFAULT_NER_MODEL)
    ap.add_argument("--fever", type=int, default=3000, help="FEVER evidence sentences sampled")
    args = ap.parse_args()
    ner = PIILeakDetector(entities=["PERSON"], ner_model=args.ner_model)
    patterns = PIILeakDetector()  # the default pattern types and secrets

    sets: dict[str, list[tuple[str, int, int]]] = {
        "presidio, private context (fake names)": [],
        "presidio, public context (fake names)": [],
    }
    for row in json.loads((DATA / "presidio_synth" / "synth_dataset_v2.json").read_text()):
        tid = row["template_id"]
        key = (
            "presidio, private context (fake names)"
            if tid in PRIVATE_TEMPLATES
            else "presidio, public context (fake names)"
            if tid in PUBLIC_TEMPLATES
            else None
        )
        if key:
            sets[key] += [(row["full_text"], s["start_position"], s["end_position"]) for s in row["spans"] if s["entity_type"] == "PERSON"]

    rows = json.loads((DATA / "presidio_synth" / "synth_dataset_v2.json").read_text())
    jobs = sorted({s["entity_value"] for r in rows for s in r["spans"] if s["entity_type"] == "TITLE" and len(s["entity_value"]) > 5})
    orgs = sorted({s["entity_value"] for r in rows for s in r["spans"] if s["entity_type"] == "ORGANIZATION"})
    cities = sorted({s["entity_value"] for r in rows for s in r["spans"] if s["entity_type"] == "GPE"})
    rng = random.Random(7)
    probe = []
    for text, s, e in sets["presidio, private context (fake names)"]:
        name, job = text[s:e], rng.choice(jobs)
        for sentence in (
            f"{name} is a {job} at {rng.choice(orgs)}.",
            f"{name} (born {rng.randint(1950, 2000)}) is a {job.lower()} from {rng.choice(cities)}.",
        ):
            probe.append((sentence, 0, len(name)))
    sets["private, bio-style SYNTHETIC probe"] = probe

    def ner_mentions(texts: list[str]) -> list[tuple[str, int, int]]:
        return [(t, e.start, e.end) for t, es in zip(texts, ner.find_many(texts)) for e in es]

    wikibio = [r["gpt3_text"] for r in json.loads((DATA / "selfcheckgpt_wikibio" / "wikibio_gpt3_hallucination_dev60.json").read_text())]
    sets["WikiBio GPT-3 biographies (public, NER)"] = ner_mentions(wikibio)
    fever = sorted({json.loads(line)["premise"] for line in (DATA / "factver_fever_eval" / "fever_eval.jsonl").read_text().splitlines()})
    fever = random.Random(3).sample(fever, min(args.fever, len(fever)))
    sets["FEVER evidence (public, NER)"] = ner_mentions(fever)

    names = ("ROLE", "BIO", "PRIVATE guard", "public")
    print(f"NER model {args.ner_model}; share of PERSON mentions each cue fires on ('public' = (ROLE or BIO) and not PRIVATE guard)\n")
    print(f"{'set':<44}{'mentions':>9}" + "".join(f"{n:>15}" for n in names))
    for label, mentions in sets.items():
        fired = {n: 0 for n in names}
        for text, s, e in mentions:
            for n, v in cues(text, s, e, patterns).items():
                fired[n] += v
        n_m = max(1, len(mentions))
        print(f"{label:<44}{len(mentions):>9}" + "".join(f"{fired[n] / n_m:>15.2f}" for n in names))


if __name__ == "__main__":
    main()
