"""YAML to plain data, remembering where every key and value stands in the file.

PyYAML keeps the last of two equal keys silently; this loader refuses them. Data is
built from the composed node tree (libyaml's parser when available), and the tree is
kept, so any key path can be mapped back to the line and column of its key or value
when an error needs it: nothing is paid for locations while a file is valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .._errors import TopologyError

_Base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Path = tuple[str | int, ...]
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"


# The safe loader's implicit resolvers (`yes` is a bool, `1.5` a float), copied: one that
# a program adds to PyYAML's loaders later does not change how a topology reads.
_RESOLVERS = {k: list(v) for k, v in _Base.yaml_implicit_resolvers.items()}
# The first characters of the plain scalars one of them may read as something else than
# a string (`yes`, `1.5`, `~`, `<<`): a plain scalar starting otherwise is a string
# (PyYAML's resolver looks up its candidates by the first character). A None key would be
# a resolver for any first character: then there is no shortcut.
_MAYBE_NOT_STR = frozenset(k for k in _RESOLVERS if k) if None not in _RESOLVERS else None


class _Loader(_Base):  # type: ignore[valid-type,misc]
    """The safe loader with implicit-tag resolution memoised: topology files repeat
    the same scalars (`explicit`, `30s`, service names) thousands of times."""

    yaml_implicit_resolvers = _RESOLVERS
    _resolved: dict[tuple[Any, str, Any], str] = {}
    _plain: dict[str, str] = {}  # plain scalars: the tag depends on the text alone

    # The composer calls these around every node for path resolvers, which this loader
    # has none of (its own empty table: one added to PyYAML's loaders later is not
    # inherited): they would do nothing, at two Python calls per node. A dict's `get` and
    # a tuple's `__len__` take the same arguments, in C.
    yaml_path_resolvers: dict[Any, Any] = {}
    _no_paths: dict[Any, Any] = {}
    descend_resolver = _no_paths.get
    ascend_resolver = ().__len__

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            known = self._plain.get(value)
            if known is None:
                if _MAYBE_NOT_STR is not None and value and value[0] not in _MAYBE_NOT_STR:
                    return _STR
                known = str(super().resolve(kind, value, implicit))
                if len(self._plain) < 100_000:
                    self._plain[value] = known
            return known
        try:
            key = (kind, value, implicit)
            return self._resolved[key]
        except KeyError:
            tag: str = super().resolve(kind, value, implicit)
            if len(self._resolved) < 100_000:
                self._resolved[key] = tag
            return tag
        except TypeError:  # unhashable `implicit`
            result: str = super().resolve(kind, value, implicit)
            return result


@dataclass
class Locations:
    """Maps key paths to 1-based (line, column) of their key or value, on demand."""

    file: str
    root: yaml.Node | None = None
    _index: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(default_factory=dict)
    # of_key's and of_value's answers: every environment's build asks for the same places
    # again (each setting's place is kept in the model).
    _key_places: dict[tuple[str | int, ...], tuple[int, int]] = field(default_factory=dict)
    _value_places: dict[tuple[str | int, ...], tuple[int, int]] = field(default_factory=dict)
    _nodes: dict[tuple[str | int, ...], yaml.Node | None] = field(default_factory=dict)

    def _children(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """Key -> (key node, value node) of one mapping, indexed on first use."""
        index = self._index.get(id(node))
        if index is None:
            index = {}
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode):
                    index.setdefault(k.value, (k, v))
            self._index[id(node)] = index
        return index

    def _node(self, path: tuple[str | int, ...]) -> yaml.Node | None:
        """The value node at `path`, or None; each path's node is looked up once (sibling
        keys ask for the same parents again and again)."""
        if not path:
            return self.root
        try:
            return self._nodes[path]
        except KeyError:
            pass
        parent = self._node(path[:-1])
        part = path[-1]
        node: yaml.Node | None = None
        if isinstance(parent, yaml.MappingNode):
            pair = self._children(parent).get(str(part))
            node = pair[1] if pair is not None else None
        elif isinstance(parent, yaml.SequenceNode) and isinstance(part, int):
            node = parent.value[part] if 0 <= part < len(parent.value) else None
        self._nodes[path] = node
        return node

    def _find(self, path: Path, key: bool) -> tuple[int, int] | None:
        path = tuple(path)
        if key and path:
            parent = self._node(path[:-1])
            if isinstance(parent, yaml.MappingNode):
                pair = self._children(parent).get(str(path[-1]))
                return _mark(pair[0]) if pair is not None else None
        node = self._node(path)
        return _mark(node) if node is not None else None

    def key_places(self, path: Path) -> dict[str, tuple[int, int]]:
        """The place of each key of the mapping at `path` ({} when there is none): what
        `of_key` answers for each of them, in one lookup (a stream's topics)."""
        node = self._node(tuple(path))
        if not isinstance(node, yaml.MappingNode):
            return {}
        return {k: _mark(pair[0]) for k, pair in self._children(node).items()}

    def find_key(self, path: Path) -> tuple[int, int] | None:
        """The key's place when `path` exists in the file, else None (no fallback)."""
        return self._find(tuple(path), True) if path else None

    def of_value(self, path: Path) -> tuple[int, int]:
        """The value's place; falls back to the nearest enclosing place that is known."""
        p = tuple(path)
        known = self._value_places.get(p)
        if known is not None:
            return known
        asked = p
        while True:
            found = self._find(p, False)
            if found is not None:
                break
            if not p:
                found = (1, 1)
                break
            p = p[:-1]
        self._value_places[asked] = found
        return found

    def of_key(self, path: Path) -> tuple[int, int]:
        """The key's place (for unknown or misspelt keys); falls back to the value's."""
        p = tuple(path)
        known = self._key_places.get(p)
        if known is not None:
            return known
        place = self._of_key(p)
        self._key_places[p] = place
        return place

    def _of_key(self, p: tuple[str | int, ...]) -> tuple[int, int]:
        if p:
            found = self._find(p, True)
            if found is not None:
                return found
        return self.of_value(p)

    def error(
        self, path: Path, message: str, *, at_key: bool = False, severity: str = "error"
    ) -> TopologyError:
        line, col = self.of_key(path) if at_key else self.of_value(path)
        return TopologyError(self.file, line, col, dotted(path), message, severity)


def dotted(path: Path) -> str:
    """`streams.ORDERS.topics.order.created` style; list indexes as `[2]`."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _TooManyValues(Exception):
    """Aliases expand the document beyond the builder's budget (a "billion laughs")."""

    def __init__(self, node: yaml.Node) -> None:
        self.node = node


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, locs: Locations, budget: int) -> None:
        self.loader = loader
        self.locs = locs
        self.errors: list[TopologyError] = []
        # Values left to build. Without aliases a document has fewer values than
        # characters; nested aliases can multiply that without bound (ten levels of ten
        # `*a` are 10**10 values from 300 bytes), which would hang the validator.
        self.budget = budget

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _TooManyValues(node)
        if isinstance(node, yaml.ScalarNode):
            if node.tag == _STR:
                return node.value
            return self._construct(node)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, path)
        return self._construct(node)

    def _sequence(self, node: yaml.SequenceNode, path: Path) -> list[Any]:
        out: list[Any] = []
        for i, child in enumerate(node.value):
            # A string, as `build` makes it, without a call and a path per item (most are).
            if type(child) is yaml.ScalarNode and child.tag == _STR:
                self.budget -= 1
                if self.budget < 0:
                    raise _TooManyValues(child)
                out.append(child.value)
            else:
                out.append(self.build(child, (*path, i)))
        return out

    def _construct(self, node: yaml.Node) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError:
            raise
        except Exception as exc:
            # An explicit tag on a value it cannot read (`!!int many`, `!!timestamp x`):
            # PyYAML's constructors then raise ValueError, AttributeError and the like.
            value = repr(node.value) if isinstance(node, yaml.ScalarNode) else "this value"
            tag = str(node.tag).rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value} as {tag} ({exc})", node.start_mark
            ) from exc

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        if any(k.tag == _MERGE for k, _ in node.value):
            own = [(k, v) for k, v in node.value if k.tag != _MERGE]
            try:
                self.loader.flatten_mapping(node)  # resolves `<<` merge keys
            except yaml.MarkedYAMLError as exc:
                line, col = _mark(node)
                self.errors.append(
                    TopologyError(self.locs.file, line, col, dotted(path), str(exc.problem))
                )
                return {}
            _drop_overridden(node, own)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _STR:
                key: Any = key_node.value
            else:
                key = self._construct(key_node)
            if not isinstance(key, str):
                # Go on with the key as written (`yes`, not `True`), so that later errors
                # about it can be located.
                written = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
                kline, kcol = _mark(key_node)
                self.errors.append(
                    TopologyError(
                        self.locs.file,
                        kline,
                        kcol,
                        dotted((*path, written)),
                        f"key {key!r} must be a string; quote it (YAML reads unquoted "
                        "on/off/yes/no as booleans and digits as numbers)",
                    )
                )
                key = written
            if key in out:
                kline, kcol = _mark(key_node)
                fl, fc = self.locs.of_key((*path, key))
                self.errors.append(
                    TopologyError(
                        self.locs.file,
                        kline,
                        kcol,
                        dotted((*path, key)),
                        f"duplicate key `{key}` (first defined at line {fl}, column {fc}); "
                        "YAML would silently keep only the last one",
                    )
                )
                continue
            # A string, as `build` makes it, without a call and a path per value (most are).
            if type(value_node) is yaml.ScalarNode and value_node.tag == _STR:
                self.budget -= 1
                if self.budget < 0:
                    raise _TooManyValues(value_node)
                out[key] = value_node.value
            else:
                out[key] = self.build(value_node, (*path, key))
        return out


def _drop_overridden(node: yaml.MappingNode, own: list[tuple[yaml.Node, yaml.Node]]) -> None:
    """Keep only the pairs of a flattened mapping that take effect.

    After `flatten_mapping`, the merged pairs come first (the first-listed mapping's last)
    and the mapping's own pairs after them. YAML's merge lets the own keys override merged
    ones, and an earlier-listed mapping override a later one: that is not a duplicate key.
    Dropping the overridden pairs keeps the data and the locations in agreement.
    """
    merged = node.value[: len(node.value) - len(own)]
    taken = {k.value for k, _ in own if isinstance(k, yaml.ScalarNode)}
    kept: list[tuple[yaml.Node, yaml.Node]] = []
    for k, v in reversed(merged):
        if isinstance(k, yaml.ScalarNode):
            if k.value in taken:
                continue
            taken.add(k.value)
        kept.append((k, v))
    node.value = [*reversed(kept), *own]


def _syntax_error(file: str, exc: yaml.MarkedYAMLError, text: str) -> TopologyError:
    mark = exc.problem_mark or exc.context_mark
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    lines = text.splitlines() or [""]
    if line > len(lines):
        # The parser's mark is at the end of the input, past the last line break: name
        # the end of the last line instead, a place that exists in the file.
        line, col = len(lines), len(lines[-1]) + 1
    problem = exc.problem or "invalid YAML"
    if exc.context:
        problem = f"{exc.context}: {problem}"
    if "expected a single document" in problem or "but found another document" in problem:
        problem = "the file holds several YAML documents (`---`); a topology is one document"
    return TopologyError(file, line, col, "", f"YAML syntax error: {problem}")


# PyYAML's C composer recurses once per nesting level and overflows the C stack (the
# process dies, no exception) somewhere past 10,000 levels; the builder here recurses in
# Python. A topology nests about 8 levels deep.
MAX_DEPTH = 100


_BRACKETS = re.compile(r"[\[\]{}]")


# The columns where block collections can start on a line: its indentation, then each
# compact `- `, `? ` or `: ` entry (`- - a: b` nests three collections on one line).
_BLOCK_LEAD = re.compile(r" *(?:[-?:](?: +|$))*")


def _block_depth_bound(lines: list[str]) -> int:
    """An upper bound of the block-collection nesting, from indentation.

    A block collection nested in another starts further right, except a sequence that is
    a mapping's value (same column): so the depth is at most two per column where a
    collection can start, and those columns are at most each line's indentation plus its
    compact entry indicators.
    """
    widest = max((m.end() for line in lines if (m := _BLOCK_LEAD.match(line))), default=0)
    return 2 * widest + 2


def _flow_depth_bound(lines: list[str]) -> int:
    """An upper bound of the flow-collection nesting (`[`, `{`), cheaper than parsing.

    Every opening bracket counts. A closing one is credited only against openings of its
    own line, and only on a line without a quote or `#`: such a line is either all syntax,
    or all inside one quoted or block scalar that starts and ends on other lines (its
    brackets then nest nothing, and cancelling them among themselves lowers nothing real).
    A generated file of thousands of one-line `{...}` mappings is then cleared without a
    second pass of the parser over it.
    """
    carried = peak = 0
    for line in lines:
        if "[" not in line and "{" not in line:
            continue
        if '"' in line or "'" in line or "#" in line:
            carried += line.count("[") + line.count("{")
            peak = max(peak, carried)
            continue
        depth = top = 0
        for ch in _BRACKETS.findall(line):
            if ch == "[" or ch == "{":
                depth += 1
                top = max(top, depth)
            elif depth:
                depth -= 1
        peak = max(peak, carried + top)
        carried += depth
    return peak


def _too_deep(text: str) -> tuple[int, int] | None:
    """Where (line, column) the nesting first goes deeper than MAX_DEPTH, or None.

    Nesting needs a bracket or indentation, so most files are cleared by counting; the
    others are measured on the parser's events, which involves no recursion.
    """
    lines = text.splitlines()
    longest = max(map(len, lines), default=0)
    if text.count("[") + text.count("{") + 2 * longest + 2 <= MAX_DEPTH:
        return None
    if _flow_depth_bound(lines) + _block_depth_bound(lines) <= MAX_DEPTH:
        return None
    loader = _Loader(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    return (mark.line + 1, mark.column + 1) if mark else (1, 1)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None  # a syntax error: composing reports it, before any deep recursion
    finally:
        loader.dispose()
    return None


def load_yaml(text: str, file: str) -> tuple[Any, Locations, list[TopologyError]]:
    """Parse one YAML document into plain data, its locations and any errors found.

    Syntax errors, several documents and duplicate keys come back as errors, never raised.
    """
    locs = Locations(file)
    deep = _too_deep(text)
    if deep is not None:
        message = f"the document nests deeper than {MAX_DEPTH} levels; a topology needs about 8"
        return None, locs, [TopologyError(file, *deep, "", message)]
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            return None, locs, [_syntax_error(file, exc, text)]
        except yaml.reader.ReaderError as exc:
            # A character YAML does not allow (a control character): at its place, one line.
            if _Base is yaml.SafeLoader:
                head = text[: exc.position]
            else:  # libyaml's position counts bytes of UTF-8, not characters
                head = text.encode("utf-8")[: exc.position].decode("utf-8", errors="ignore")
            line = head.count("\n") + 1
            col = len(head) - (head.rfind("\n") + 1) + 1
            message = f"YAML error: {exc.reason} (character #x{exc.character:04x})"
            return None, locs, [TopologyError(file, line, col, "", message)]
        except yaml.YAMLError as exc:
            message = " ".join(str(exc).split())
            return None, locs, [TopologyError(file, 1, 1, "", f"YAML error: {message}")]
        if node is None:
            return None, locs, []
        locs.root = node
        budget = 100_000 + 50 * len(text)
        builder = _Builder(loader, locs, budget)
        try:
            data = builder.build(node, ())
        except yaml.MarkedYAMLError as exc:
            return None, locs, [_syntax_error(file, exc, text)]
        except _TooManyValues as exc:
            line, col = _mark(exc.node)
            message = (
                f"aliases (`*name`) expand the document to over {budget:,} values; "
                "write the values out, or nest fewer aliases"
            )
            return None, locs, [TopologyError(file, line, col, "", message)]
        except (yaml.YAMLError, ValueError, RecursionError) as exc:
            message = " ".join(str(exc).split())
            return None, locs, [TopologyError(file, 1, 1, "", f"YAML error: {message}")]
        return data, locs, builder.errors
    finally:
        loader.dispose()
