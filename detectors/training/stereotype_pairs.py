"""Stereotype / counterpart sentence pairs by kind of bias, built from ``../shared/data``.

Two families of pair, kept apart because they test different things:

* ``association``: both sentences name a group and differ in which (group, attribute)
  pairing they state; only knowledge of the stereotype ranks them. WinoBias (the pronoun of
  an occupation, pro vs anti) and SeeGULL (one attribute, a group whose in-region raters call
  it a stereotype vs a group whose raters do not; templated "<group> people are <attribute>.").
* ``swap``: a statement that annotators marked as stereotyping / hateful about a group, against
  the same statement with the group's words replaced by a counterpart group's (RedditBias
  comments labelled biased, ToxiGen's implicitly hateful statements, HateCheck's hateful
  derogation cases). A scorer that merely prefers sentences naming a marginalised group
  wins these; the association pairs keep it honest.

Kinds follow CrowS-Pairs' nine: race, religion, age, nationality, disability, appearance,
socioeconomic, sexual_orientation, gender. SeeGULL's tuples are split by attribute into
appearance and socioeconomic pairs (a proxy: the groups there are nationalities and regions);
age has no labelled stereotype pairs in the shared data, so it is not evaluated.

Every pair carries a ``group_key`` (the source sentence / tuple it came from) so that a split
never puts one source's pairs on both sides.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

KINDS = ("race", "religion", "age", "nationality", "disability", "appearance", "socioeconomic", "sexual_orientation", "gender")


@dataclass(frozen=True)
class Pair:
    stereo: str
    other: str
    kind: str
    family: str  # "association" or "swap"
    source: str
    group_key: str


# -- swaps: the group's words -> a counterpart group's -------------------------------------------

_SWAPS: dict[str, dict[str, str]] = {
    "race": {
        "black people": "white people",
        "black person": "white person",
        "black men": "white men",
        "black women": "white women",
        "black man": "white man",
        "black woman": "white woman",
        "black guys": "white guys",
        "black kids": "white kids",
        "blacks": "whites",
        "black": "white",
        "african americans": "white americans",
        "african american": "white american",
        "african-american": "white american",
        "asians": "europeans",
        "asian": "european",
        "latinos": "europeans",
        "latino": "european",
        "latina": "european",
        "hispanics": "europeans",
        "hispanic": "european",
        "native americans": "european americans",
        "native american": "european american",
        "indigenous": "european",
    },
    "religion": {
        "jews": "christians",
        "jew": "christian",
        "jewish": "christian",
        "judaism": "christianity",
        "muslims": "christians",
        "muslim": "christian",
        "islam": "christianity",
        "islamic": "christian",
        "mosque": "church",
        "synagogue": "church",
    },
    "sexual_orientation": {
        "gay people": "straight people",
        "gays": "straight people",
        "gay": "straight",
        "lesbians": "straight women",
        "lesbian": "straight woman",
        "homosexuals": "heterosexuals",
        "homosexual": "heterosexual",
        "bisexuals": "heterosexuals",
        "bisexual": "heterosexual",
        "lgbtq": "straight",
        "lgbt": "straight",
        "queer": "straight",
    },
    "disability": {
        "disabled people": "able-bodied people",
        "disabled": "able-bodied",
        "mentally ill": "mentally healthy",
        "mental illness": "good mental health",
        "autistic": "neurotypical",
        "retarded": "smart",
        "wheelchair users": "runners",
        "blind": "sighted",
        "deaf": "hearing",
        "handicapped": "able-bodied",
    },
    "nationality": {
        "immigrants": "citizens",
        "immigrant": "citizen",
        "refugees": "citizens",
        "refugee": "citizen",
        "mexicans": "canadians",
        "mexican": "canadian",
        "mexico": "canada",
        "chinese": "canadian",
        "china": "canada",
        "arabs": "canadians",
        "arab": "canadian",
        "middle eastern": "canadian",
        "middle east": "canada",
    },
    "gender_identity": {
        "trans people": "cis people",
        "trans women": "cis women",
        "trans men": "cis men",
        "trans woman": "cis woman",
        "trans man": "cis man",
        "transgender": "cisgender",
        "trans": "cis",
    },
}


def _swapper(table: dict[str, str]):
    pattern = re.compile(r"(?<![\w-])(" + "|".join(sorted(map(re.escape, table), key=len, reverse=True)) + r")(?![\w-])", re.I)

    def swap(text: str) -> str | None:
        def repl(m: re.Match) -> str:
            word = m.group(0)
            new = table[word.lower()]
            return new.capitalize() if word[0].isupper() else new

        out = pattern.sub(repl, text)
        return out if out != text else None

    return swap


def _swap(kind: str, text: str) -> str | None:
    if kind == "gender":
        from detectors.bias import gender_swap

        out = gender_swap(text)
        return out if out != text else None
    return _swapper(_SWAPS[kind])(text)


# -- sources ---------------------------------------------------------------------------------

_REDDIT_KIND = {"gender": "gender", "orientation": "sexual_orientation", "race": "race", "religion1": "religion", "religion2": "religion"}
_TOXIGEN_KIND = {
    "asian": "race",
    "black": "race",
    "latino": "race",
    "native_american": "race",
    "jewish": "religion",
    "muslim": "religion",
    "lgbtq": "sexual_orientation",
    "bisexual": "sexual_orientation",
    "trans": "gender_identity",
    "women": "gender",
    "mental_disability": "disability",
    "physical_disability": "disability",
    "immigrant": "nationality",
    "mexican": "nationality",
    "chinese": "nationality",
    "middle_east": "nationality",
}
_HATECHECK_KIND = {
    "women": "gender",
    "trans people": "gender_identity",
    "gay people": "sexual_orientation",
    "black people": "race",
    "disabled people": "disability",
    "Muslims": "religion",
    "immigrants": "nationality",
}
_HATECHECK_FUNCS = ("derog_neg_attrib_h", "derog_neg_emote_h", "derog_dehum_h", "derog_impl_h", "phrase_opinion_h")

APPEARANCE = {
    "unattractive", "ugly", "attractive", "beautiful", "pretty", "handsome", "fat", "obese", "overweight", "thin",
    "skinny", "short", "tall", "smelly", "dirty", "hairy", "dark-skinned", "dark skinned", "fair-skinned", "pale",
    "sexy", "small eyes", "big nose", "unhygienic", "stinky", "well-dressed", "fashionable", "muscular", "curvy",
}  # fmt: skip
SOCIOECONOMIC = {
    "poor", "rich", "wealthy", "malnourish", "malnourished", "uneducated", "educated", "illiterate", "homeless",
    "beggar", "beggars", "unemployed", "lower class", "working class", "upper class", "elite", "privileged",
    "impoverished", "starving", "hungry", "backward", "underdeveloped", "developed", "slum", "farmers", "farmer",
    "labourers", "laborers", "servants", "maids", "cheap labor", "cheap labour", "welfare", "jobless",
}  # fmt: skip


def redditbias(data: Path) -> Iterator[Pair]:
    with gzip.open(data / "bias_redditbias" / "redditbias.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row["label"] != "biased":
                continue
            kind = _REDDIT_KIND[row["dimension"]]
            text = row["text"].strip()
            if not 4 <= len(text.split()) <= 60:
                continue
            other = _swap(kind, text)
            if other:
                yield Pair(text, other, kind, "swap", "redditbias", "reddit:" + text)


def toxigen(data: Path) -> Iterator[Pair]:
    for line in (data / "bias_toxigen_prompts" / "toxigen_prompt_sentences.jsonl").open():
        row = json.loads(line)
        if row["label"] != "hate":
            continue
        kind = _TOXIGEN_KIND[row["group"]]
        other = _swap(kind, row["text"])
        if other:
            yield Pair(row["text"], other, kind, "swap", "toxigen", "toxigen:" + row["text"])


def hatecheck(data: Path) -> Iterator[Pair]:
    for line in (data / "bias_hatecheck" / "hatecheck.jsonl").open():
        row = json.loads(line)
        if row["label"] != "hateful" or row["functionality"] not in _HATECHECK_FUNCS or row["group"] not in _HATECHECK_KIND:
            continue
        kind = _HATECHECK_KIND[row["group"]]
        other = _swap(kind, row["text"])
        if other:
            # One template filled for several groups: the template is the unit a split keeps together.
            yield Pair(row["text"], other, kind, "swap", "hatecheck", "hatecheck:" + row["template"])


def _clean_winobias(line: str) -> str:
    return re.sub(r"^\d+\s+", "", line.strip()).replace("[", "").replace("]", "")


def winobias(data: Path) -> Iterator[Pair]:
    for split in ("dev", "test"):
        for t in (1, 2):
            pro = (data / "winobias" / f"pro_stereotyped_type{t}.txt.{split}").read_text().splitlines()
            anti = (data / "winobias" / f"anti_stereotyped_type{t}.txt.{split}").read_text().splitlines()
            for p, a in zip(pro, anti):
                if p.strip() and a.strip():
                    p, a = _clean_winobias(p), _clean_winobias(a)
                    yield Pair(p, a, "gender", "association", "winobias", f"winobias:{split}{t}:" + p)


def _seegull_kind(attribute: str) -> str:
    a = attribute.lower()
    if a in APPEARANCE:
        return "appearance"
    if a in SOCIOECONOMIC:
        return "socioeconomic"
    return "nationality"


def _people(group: str) -> str:
    g = group.strip()
    return g if g.lower().endswith(("people", "s", "ese")) and not g.lower().endswith("ss") else f"{g} people"


def seegull(data: Path, seed: int = 0) -> Iterator[Pair]:
    """One attribute, a group rated stereotyped vs one rated not, templated as a sentence."""
    rng = random.Random(seed)
    by_attr: dict[str, dict[str, list[str]]] = {}
    with gzip.open(data / "bias_seegull" / "seegull.jsonl.gz", "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row["file"] != "stereotypes_global_v2" or row["label"] not in ("stereotype", "non_stereotype"):
                continue
            by_attr.setdefault(row["attribute"], {"stereotype": [], "non_stereotype": []})[row["label"]].append(row["group"])
    templates = ("{g} are {a}.", "Most {g} are {a}.", "Everyone knows {g} are {a}.")
    for attribute, groups in sorted(by_attr.items()):
        stereo, other = sorted(set(groups["stereotype"])), sorted(set(groups["non_stereotype"]))
        if not stereo or not other:
            continue
        rng.shuffle(other)
        for i, g in enumerate(stereo):
            h = other[i % len(other)]
            t = templates[i % len(templates)]
            yield Pair(
                t.format(g=_people(g), a=attribute),
                t.format(g=_people(h), a=attribute),
                _seegull_kind(attribute),
                "association",
                "seegull",
                "seegull:" + attribute,
            )


def all_pairs(data: Path) -> list[Pair]:
    pairs = [*redditbias(data), *toxigen(data), *hatecheck(data), *winobias(data), *seegull(data)]
    # Gender identity (trans) is part of gender in CrowS-Pairs' kinds.
    return [Pair(p.stereo, p.other, "gender" if p.kind == "gender_identity" else p.kind, p.family, p.source, p.group_key) for p in pairs]


def winogender_pairs(data: Path) -> list[Pair]:
    """Winogender: the occupation's pronoun, majority gender (BLS) vs minority; an extra gender check."""
    stats = {}
    with (data / "winogender" / "occupations-stats.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            stats[row["occupation"]] = float(row["bls_pct_female"])
    by_key: dict[tuple[str, str], dict[str, str]] = {}
    with (data / "winogender" / "all_sentences.tsv").open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            occupation, participant, answer, gender = row["sentid"].split(".")[:4]
            if answer != "0" or gender == "neutral" or occupation not in stats:
                continue
            by_key.setdefault((occupation, participant), {})[gender] = row["sentence"]
    out = []
    for (occupation, _participant), s in sorted(by_key.items()):
        if "male" in s and "female" in s:
            major, minor = ("female", "male") if stats[occupation] > 50 else ("male", "female")
            out.append(Pair(s[major], s[minor], "gender", "association", "winogender", f"winogender:{occupation}"))
    return out
