"""NATS subjects: token rules, wildcard matching and overlap, as the server applies them.

`*` matches exactly one token and `>` one or more trailing tokens. Two subjects overlap
when some concrete subject matches both; the server refuses overlapping subjects within a
stream and between the streams of an account. `SubjectIndex` finds overlaps with a token
trie, so checking N subjects costs about N lookups rather than N^2/2 pair comparisons.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

_BAD_TOKEN_CHARS = re.compile(r"[\s*>]")
# Stream and consumer names: the server's rules (no whitespace . * > / \, <= 255 chars).
NAME_PATTERN = r"^[^\s.*>/\\]{1,255}$"
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(name: str) -> bool:
    """True when `name` is a valid stream or durable consumer name for the server."""
    return bool(_NAME_RE.match(name))


def subject_problem(
    subject: str, *, allow_wildcards: bool = True, allow_gt: bool = True
) -> str | None:
    """Why `subject` is not a valid subject, or None when it is."""
    if not subject:
        return "a subject cannot be empty"
    tokens = subject.split(".")
    for i, tok in enumerate(tokens):
        if tok == "":
            return f"empty token in '{subject}' (two dots, or a leading or trailing dot)"
        if tok == "*":
            if not allow_wildcards:
                return f"'{subject}' may not contain the wildcard '*'"
            continue
        if tok == ">":
            if not (allow_wildcards and allow_gt):
                return f"'{subject}' may not contain the wildcard '>'"
            if i != len(tokens) - 1:
                return f"'>' must be the last token in '{subject}'"
            continue
        if _BAD_TOKEN_CHARS.search(tok):
            return f"token '{tok}' of '{subject}' contains whitespace or a wildcard character"
    return None


def subject_matches(pattern: str, subject: str) -> bool:
    """True when the concrete `subject` matches `pattern` (which may hold wildcards)."""
    pt, st = pattern.split("."), subject.split(".")
    for i, tok in enumerate(pt):
        if tok == ">":
            return len(st) > i
        if i >= len(st):
            return False
        if tok != "*" and tok != st[i]:
            return False
    return len(pt) == len(st)


def subjects_overlap(a: str, b: str) -> bool:
    """True when some concrete subject matches both `a` and `b`."""
    at, bt = a.split("."), b.split(".")
    for i in range(max(len(at), len(bt))):
        x = at[i] if i < len(at) else None
        y = bt[i] if i < len(bt) else None
        if x == ">" or y == ">":
            # '>' needs at least one token at its position on the other side.
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != y and x != "*" and y != "*":
            return False
    return True


@dataclass
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    ends: list[tuple[str, T]] = field(default_factory=list)


class SubjectIndex(Generic[T]):
    """A trie of subjects, each with an owner, answering "which subjects overlap this one"."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()

    def add(self, subject: str, owner: T) -> None:
        node = self._root
        for tok in subject.split("."):
            child = node.children.get(tok)
            if child is None:  # not setdefault: that made a node for every token added
                child = node.children[tok] = _Node()
            node = child
        node.ends.append((subject, owner))

    def overlapping(self, subject: str) -> Iterator[tuple[str, T]]:
        """Every indexed (subject, owner) that overlaps `subject` (itself included if added)."""
        yield from self._search(self._root, subject.split("."), 0)

    def _search(self, node: _Node[T], tokens: list[str], i: int) -> Iterator[tuple[str, T]]:
        if i == len(tokens):
            yield from node.ends
            return
        tok = tokens[i]
        if tok == ">":
            # Everything below this node with at least one more token overlaps.
            for child in node.children.values():
                yield from self._all(child)
            return
        gt = node.children.get(">")
        if gt is not None:
            yield from gt.ends
        if tok == "*":
            for key, child in node.children.items():
                if key != ">":
                    yield from self._search(child, tokens, i + 1)
            return
        exact = node.children.get(tok)
        if exact is not None:
            yield from self._search(exact, tokens, i + 1)
        star = node.children.get("*")
        if star is not None:
            yield from self._search(star, tokens, i + 1)

    def _all(self, node: _Node[T]) -> Iterator[tuple[str, T]]:
        stack = [node]
        while stack:
            n = stack.pop()
            yield from n.ends
            stack.extend(n.children.values())
