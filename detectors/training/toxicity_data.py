"""Labelled toxic / clean texts from ``../shared/data``, each with a fixed split, for the toxicity head.

Sources (read in place, never copied): Davidson et al. 2017 tweets (hate speech / offensive /
neither), HateCheck's functional tests, ToxiGen's human-curated prompt statements and the
bias_madlibs template sentences. Splits are by hash of a key that keeps near-duplicates
together: a HateCheck template (all its target groups on one side), a madlibs sentence's
skeleton (its adjective / verb, whatever the name and identity term), a tweet's row, a ToxiGen
sentence. ``train`` is fitted on, ``tune`` chooses C and the threshold, ``report`` is never
looked at before the figures are printed.

Subsamples are deterministic (by hash), sized so that the default embedding model encodes
them all in minutes on two busy CPU cores (about 10,000 texts): a share of Davidson's tweets of each
class (offensive ones, 77% of the set, least); a fixed number of madlibs sentences per
identity term and split.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SOURCES = ("davidson", "hatecheck", "toxigen", "madlibs")
SHARES = {"train": 0.70, "tune": 0.15, "report": 0.15}
MADLIBS_SHARES = {"train": 0.40, "tune": 0.15, "report": 0.45}  # madlibs: the report split measures per-term rates
OFFENSIVE_SHARE = 0.05  # of Davidson's 19,190 offensive tweets: about 1,000
NEITHER_SHARE = 0.35  # of its 4,163 "neither" tweets: about 1,450
HATE_SHARE = 0.7  # of its 1,430 hate-speech tweets: about 1,000
# madlibs sentences per identity term: (non_toxic, toxic) per split
MADLIBS_PER_TERM = {"train": (8, 4), "tune": (4, 2), "report": (20, 4)}


@dataclass(frozen=True)
class Example:
    text: str
    toxic: bool
    source: str
    split: str
    hate: bool  # hateful towards a group (identity hate): Davidson hate_speech, HateCheck hateful, ToxiGen hate
    kind: str  # Davidson category, HateCheck functionality, madlibs template, ToxiGen label
    group: str | None = None


def _unit(key: str) -> float:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def split_of(key: str, shares: dict[str, float] = SHARES) -> str:
    u, acc = _unit("split:" + key), 0.0
    for name, share in shares.items():
        acc += share
        if u < acc:
            return name
    return list(shares)[-1]


def _jsonl(path: Path) -> Iterator[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def davidson(data: Path) -> list[Example]:
    out = []
    for r in _jsonl(data / "toxicity_davidson" / "davidson_labeled_data.jsonl.gz"):
        cat = r["category"]
        share = {"offensive_language": OFFENSIVE_SHARE, "neither": NEITHER_SHARE, "hate_speech": HATE_SHARE}[cat]
        if _unit(f"sub:{r['row_id']}") >= share:
            continue
        out.append(Example(r["text"], cat != "neither", "davidson", split_of(f"davidson:{r['row_id']}"), cat == "hate_speech", cat))
    return out


def hatecheck(data: Path) -> list[Example]:
    out = []
    for r in _jsonl(data / "bias_hatecheck" / "hatecheck.jsonl"):
        hateful = r["label"] == "hateful"
        out.append(
            Example(r["text"], hateful, "hatecheck", split_of(f"hatecheck:{r['template']}"), hateful, r["functionality"], r["group"])
        )
    return out


def toxigen(data: Path) -> list[Example]:
    out = []
    for r in _jsonl(data / "bias_toxigen_prompts" / "toxigen_prompt_sentences.jsonl"):
        hate = r["label"] == "hate"
        out.append(Example(r["text"], hate, "toxigen", split_of(f"toxigen:{r['text'].lower()}"), hate, r["label"], r["group"]))
    return out


def madlibs_skeleton(text: str, group: str, template: str) -> str:
    """What a madlibs sentence says without its name and identity term (its adjective or verb)."""
    words = text.lower().split()
    if template == "name_adj":
        words = words[1:]  # the name
    return " ".join(w for w in words if w not in group.lower().split())


def _madlibs_rows(data: Path) -> dict[tuple[str, str, bool], list[Example]]:
    """Every madlibs sentence with an identity term, by (term, split, toxic), each list in its fixed pick order."""
    rows: dict[tuple[str, str, bool], list[Example]] = {}
    for r in _jsonl(data / "bias_madlibs" / "bias_madlibs_77k.jsonl.gz"):
        if r["group"] is None:
            continue
        toxic = r["label"] == "toxic"
        split = split_of("madlibs:" + madlibs_skeleton(r["text"], r["group"], r["template"]), MADLIBS_SHARES)
        ex = Example(r["text"], toxic, "madlibs", split, False, r["template"], r["group"])
        rows.setdefault((r["group"], split, toxic), []).append(ex)
    for exs in rows.values():
        exs.sort(key=lambda e: _unit("pick:" + e.text))
    return rows


def madlibs(data: Path) -> list[Example]:
    out = []
    for (_, split, toxic), exs in sorted(_madlibs_rows(data).items()):
        out.extend(exs[: MADLIBS_PER_TERM[split][1 if toxic else 0]])
    return out


def madlibs_terms_report(data: Path = DEFAULT_DATA, non_toxic: int = 150, toxic: int = 40) -> list[Example]:
    """For the per-term tables: the first ``non_toxic`` / ``toxic`` sentences of each identity term on the madlibs
    REPORT split (about 511 / 289 per term there), in the pick order of :func:`madlibs`, so that the 20 / 4 per term
    that :func:`load` reports on are among them. No report-split sentence is trained or tuned on: the split is by
    skeleton (adjective / verb), so none of these adjectives is in train or tune either."""
    out = []
    for (_, split, is_toxic), exs in sorted(_madlibs_rows(data).items()):
        if split == "report":
            out.extend(exs[: toxic if is_toxic else non_toxic])
    return out


def load(data: Path = DEFAULT_DATA, sources: tuple[str, ...] = SOURCES) -> list[Example]:
    loaders = {"davidson": davidson, "hatecheck": hatecheck, "toxigen": toxigen, "madlibs": madlibs}
    return [ex for s in sources for ex in loaders[s](data)]
