"""NATS subjects: token rules, wildcard matching and overlap, as the server applies them.

`*` matches exactly one token and `>` one or more trailing tokens. Two subjects overlap
when some concrete subject matches both; the server refuses overlapping subjects within a
stream and between the streams of an account. `SubjectIndex` finds overlaps with a dict
and token tries, so checking N subjects costs about N lookups rather than N^2/2 pair
comparisons.
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


def _insert(root: _Node[T], subject: str, owner: T) -> None:
    node = root
    for tok in subject.split("."):
        child = node.children.get(tok)
        if child is None:  # not setdefault: that made a node for every token added
            child = node.children[tok] = _Node()
        node = child
    node.ends.append((subject, owner))


def _is_literal(subject: str) -> bool:
    """No token of `subject` is a wildcard (`*` or `>` inside a token is a character)."""
    if "*" not in subject and ">" not in subject:
        return True
    tokens = subject.split(".")
    return "*" not in tokens and ">" not in tokens


class SubjectIndex(Generic[T]):
    """Subjects, each with an owner, answering "which subjects overlap this one".

    A topology's subjects are mostly literal (`orders.created`): two literals overlap only
    when equal, so they are kept by themselves in a dict; subjects with wildcards go in a
    token trie. A literal query is then one lookup plus a walk of the (small) wildcard
    trie; a wildcard query walks both tries, the literals' made on the first such query.
    """

    def __init__(self) -> None:
        self._literals: dict[str, list[tuple[str, T]]] = {}
        self._wild: _Node[T] = _Node()
        self._literal_trie: _Node[T] | None = None

    def add(self, subject: str, owner: T) -> None:
        if _is_literal(subject):
            self._literals.setdefault(subject, []).append((subject, owner))
            if self._literal_trie is not None:
                _insert(self._literal_trie, subject, owner)
        else:
            _insert(self._wild, subject, owner)

    def overlapping(self, subject: str) -> Iterator[tuple[str, T]]:
        """Every indexed (subject, owner) that overlaps `subject` (itself included if added)."""
        tokens = subject.split(".")
        if _is_literal(subject):
            yield from self._literals.get(subject, ())
        else:
            if self._literal_trie is None:
                self._literal_trie = _Node()
                for ends in self._literals.values():
                    for literal, owner in ends:
                        _insert(self._literal_trie, literal, owner)
            yield from self._search(self._literal_trie, tokens, 0)
        if self._wild.children:
            yield from self._search(self._wild, tokens, 0)

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
