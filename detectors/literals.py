"""Literal screens for rule sets: skip a regular expression on a text that cannot hold a match.

Most texts a monitor reads are benign, and most rules need a word that a benign text lacks ("ignore",
"yourself", "idiot"...). :func:`required_literals` reads a compiled pattern's syntax tree and returns sets of
lowercase ASCII strings such that every match contains a member of each set (none: the pattern needs no word
the screen can name, or only one- and two-letter ones). :class:`LiteralScreen` holds those sets for a list of
patterns, finds in one pass which of their strings a text holds (an Aho-Corasick automaton), and says per text
which patterns are worth running: a pattern with a set none of whose members is in the lowercased text is
skipped.

It never changes what matches. A screen only skips a pattern when no match can exist, which holds because:

* the sets are taken from parts of the pattern that every match must pass through: a run of literal
  characters in a sequence (zero-width ``\\b``, ``^`` and ``$`` inside it do not break the run, since the
  characters on both sides are still adjacent in the text), a group, a repeat with a minimum of one or more,
  or an alternation whose every branch names a set (their union);
* the test compares the lowercased text with lowercased ASCII literals: a case-insensitive match of ``abc`` is
  some casing of ``abc`` in the text, so ``"abc" in text.lower()`` holds, and a case-sensitive one even more so.
  That needs every text character an ASCII literal can match to be ASCII. Four characters outside ASCII are the
  exceptions under IGNORECASE: the dotted capital I, the dotless i, the long s and the Kelvin sign (a sweep of
  every code point finds these and no other; ``tests/test_literals.py`` repeats it). A text holding one of them
  runs every pattern; any other text, curly quotes, dashes and emoji included, is screened.

(The literals kept are those whose lowercase form is ASCII: a Kelvin sign in a pattern lowercases to ``k``, the
one ASCII letter it matches; the dotless i, the long s and the dotted capital I lowercase to non-ASCII and are
dropped.)

``tests/test_literals.py`` checks the sets on crafted patterns; checks, for every rule the detectors screen,
that no pattern a screen skips would have matched, over every text of the shared toxicity and injection sets
(and the forms the injection scan reads: normalised, decoded) and over generated texts; and that
``rule_hits``, ``scan`` and ``descriptors.is_refusal`` give what they give with every pattern run.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from typing import Any

# The standard library's own regular-expression parser (re._parser since Python 3.11, the project's floor): the
# syntax tree of a compiled pattern, exactly as the engine will run it.
_p: Any = importlib.import_module("re._parser")
_c: Any = importlib.import_module("re._constants")

# The only characters outside ASCII that an ASCII letter of a case-insensitive pattern matches (see above).
FOLDS_ONTO_ASCII = ("\u0130", "\u0131", "\u017f", "\u212a")


def folds_onto_ascii(text: str) -> bool:
    """Whether ``text`` holds one of :data:`FOLDS_ONTO_ASCII`: a case-insensitive pattern may then match it where its
    lower-cased form holds none of the pattern's words."""
    return not text.isascii() and any(c in text for c in FOLDS_ONTO_ASCII)


# A literal shorter than this is in nearly every text: a set holding one screens nothing.
MIN_LITERAL = 3

_ZERO_WIDTH = {_c.AT}
_ATOMIC = getattr(_c, "ATOMIC_GROUP", None)  # (?>...): its value is the group's items themselves
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}

Factor = frozenset[str]


def _strength(factor: Factor) -> tuple[int, int]:
    """How well a set screens: its shortest member's length first, then fewer members."""
    return (min(len(s) for s in factor), -len(factor))


def _usable(factor: Factor, min_len: int) -> bool:
    return bool(factor) and all(s.isascii() and len(s) >= min_len for s in factor)


def _ranked(factors: list[Factor], min_len: int) -> list[Factor]:
    """The usable sets, the most selective first (ties broken by their members: the same order in every process)."""
    usable = {f for f in factors if _usable(f, min_len)}
    return sorted(usable, key=lambda f: (_strength(f), sorted(f)), reverse=True)


def _factors(items, min_len: int = MIN_LITERAL) -> list[Factor]:
    """Sets of which every match of the sequence ``items`` contains at least one member (each set)."""
    out: list[Factor] = []
    run: list[str] = []

    def close_run() -> None:
        if run:
            out.append(frozenset({"".join(run).lower()}))
            run.clear()

    for op, av in items:
        if op is _c.LITERAL:
            run.append(chr(av))
            continue
        if op in _ZERO_WIDTH:
            continue  # \b, ^, $ consume nothing: the literals around them stay adjacent in the text
        close_run()
        if op is _c.SUBPATTERN:
            out.extend(_factors(av[-1], min_len))  # (group, add flags, del flags, items)
        elif _ATOMIC is not None and op is _ATOMIC:
            out.extend(_factors(av, min_len))
        elif op in _REPEATS:
            low, _high, item = av
            if low >= 1:
                out.extend(_factors(item, min_len))
        elif op is _c.BRANCH:
            chosen = [_ranked(_factors(branch, min_len), min_len) for branch in av[1]]
            if chosen and all(chosen):
                out.append(frozenset().union(*(ranked[0] for ranked in chosen)))
        # anything else (classes, any character, lookarounds, back-references) requires no literal we can name
    close_run()
    return out


def required_literals(pattern: re.Pattern[str] | str, min_len: int = MIN_LITERAL, most: int = 3) -> tuple[frozenset[str], ...]:
    """Sets of lowercase ASCII strings such that every match of ``pattern`` contains a member of **each** set,
    the most selective first (at most ``most``; empty: no useful set, the pattern always runs)."""
    source, flags = (pattern.pattern, pattern.flags) if isinstance(pattern, re.Pattern) else (pattern, 0)
    if not isinstance(source, str) or flags & re.VERBOSE:
        return ()  # a verbose pattern parses the same, but keep the screen to what its tests exercise
    return tuple(_ranked(_factors(_p.parse(source, flags), min_len), min_len)[:most])


class LiteralScreen:
    """For patterns ``patterns``: :meth:`allowed` says, per text, which are worth running (see the module's docstring).

    The literals of every pattern are looked up in one pass over the text by an Aho-Corasick automaton
    (``pyahocorasick``, C); without that package, one ``in`` test per literal (same answers, slower).
    """

    def __init__(self, patterns: Sequence[re.Pattern[str]], min_len: int = MIN_LITERAL, automaton: bool = True):
        self.literals: tuple[tuple[frozenset[str], ...], ...] = tuple(required_literals(p, min_len) for p in patterns)
        self._all = (True,) * len(self.literals)
        # Each distinct set is a "factor"; a pattern needs all of its factors, a literal satisfies the factors it is in.
        factors = sorted({f for fs in self.literals for f in fs}, key=sorted)
        factor_id = {f: i for i, f in enumerate(factors)}
        self._needs = tuple(frozenset(factor_id[f] for f in fs) for fs in self.literals)
        self._words = tuple(sorted({s for f in factors for s in f}))
        self._satisfies = tuple(frozenset(i for i, f in enumerate(factors) if s in f) for s in self._words)
        self._automaton = _automaton(self._words) if automaton and self._words else None

    def found(self, text: str) -> frozenset[int] | None:
        """The literals (by index) in ``text`` lowercased; None when ``text`` holds a character outside ASCII that
        an ASCII letter matches case-insensitively (every pattern runs)."""
        if folds_onto_ascii(text):
            return None
        low = text.lower()
        if self._automaton is not None:
            return frozenset(i for _end, i in self._automaton.iter(low))
        return frozenset(i for i, s in enumerate(self._words) if s in low)

    def allowed(self, text: str) -> Sequence[bool]:
        """One flag per pattern: False only where the pattern cannot match ``text``."""
        found = self.found(text)
        if found is None:
            return self._all
        met = frozenset().union(*(self._satisfies[i] for i in found))
        return tuple(need <= met for need in self._needs)

    def screened(self) -> int:
        """How many of the patterns have a set (the others always run)."""
        return sum(bool(factors) for factors in self.literals)


def _automaton(words: Sequence[str]):
    try:
        import ahocorasick
    except ImportError:  # pragma: no cover - a declared dependency; the plain path gives the same answers
        return None
    automaton = ahocorasick.Automaton()
    for i, word in enumerate(words):
        automaton.add_word(word, i)
    automaton.make_automaton()
    return automaton
