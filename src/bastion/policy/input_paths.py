"""Which parts of `input` a bundle's Rego can read, so only those are sent to rego-cpp.

rego-cpp parses the input term on every decision, and for small bundles that costs more than the
evaluation. A reference `input.a.b` or `input["a"]["b"]` reads only the subtree at that path; any other
use of `input` (bare, indexed by a variable or number, passed to a function, `import input`) reads
all of it, and then nothing is left out. Strings and comments are skipped, so text naming `input`
never counts; a string this reader cannot delimit, or a template string, also means all of it.
"""

import functools
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

InputPaths = frozenset[tuple[str, ...]]

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_RAW_STRING = re.compile(r"`[^`]*`")


def referenced_input_paths(sources: Iterable[str]) -> InputPaths | None:
    """The input paths `sources` read (none a prefix of another), or None when they may read all of it."""
    paths: set[tuple[str, ...]] = set()
    for source in sources:
        for path in _input_references(source):
            if not path:
                return None
            paths.add(path)
    return frozenset(path for path in paths if not any(path[:n] in paths for n in range(1, len(path))))


def project_input(document: Mapping[str, Any], paths: InputPaths | None) -> Mapping[str, Any]:
    """`document` keeping only what lies on `paths` (all of it when `paths` is None), key order kept."""
    if paths is None:
        return document
    return _take(document, _path_tree(paths))


@functools.lru_cache(maxsize=64)
def _path_tree(paths: InputPaths) -> dict[str, Any]:
    """The paths as nested keys, a leaf (None) where a subtree is kept whole; built once per bundle's paths."""
    tree: dict[str, Any] = {}
    for path in sorted(paths, key=len):
        node = tree
        for segment in path[:-1]:
            node = node.setdefault(segment, {})
        node[path[-1]] = None
    return tree


def input_references(paths: InputPaths | None) -> list[str] | None:
    """The paths as sorted Rego references (`input.tool.name`, `input.args["a-b"]`); None stays None."""
    if paths is None:
        return None
    return sorted("input" + "".join(f".{segment}" if _IDENT.fullmatch(segment) else f"[{json.dumps(segment)}]"
                                    for segment in path) for path in paths)


def _take(value: Any, tree: dict[str, Any] | None) -> Any:
    """The part of `value` the tree names; a leaf (None) or a non-object value is kept whole."""
    if tree is None or not isinstance(value, Mapping):
        return value
    return {key: _take(item, tree[key]) for key, item in value.items() if key in tree}


def _input_references(source: str) -> Iterator[tuple[str, ...]]:
    """The static path after each reference to the `input` root document in `source` (empty: all of it)."""
    position = 0
    while position < len(source):
        char = source[position]
        if char == "#":
            newline = source.find("\n", position)
            position = len(source) if newline < 0 else newline
        elif char in '"`':
            literal = (_STRING if char == '"' else _RAW_STRING).match(source, position)
            if literal is None or source[position - 1:position] == "$":
                yield ()
            position = literal.end() if literal else position + 1
        elif (identifier := _IDENT.match(source, position)) is not None:
            if identifier.group() == "input" and source[position - 1:position] != ".":
                yield _static_path(source, identifier.end())
            position = identifier.end()
        else:
            position += 1


def _static_path(source: str, position: int) -> tuple[str, ...]:
    """The `.name` and `["name"]` segments that follow `position`, up to the first of any other kind."""
    segments: list[str] = []
    while True:
        if source.startswith(".", position) and (name := _IDENT.match(source, position + 1)):
            segments.append(name.group())
            position = name.end()
        elif (source.startswith("[", position) and (key := _STRING.match(source, position + 1))
              and source.startswith("]", key.end())):
            segments.append(json.loads(key.group()))
            position = key.end() + 1
        else:
            return tuple(segments)
