"""Bounds on a call's arguments, checked on every surface before policy: size, nesting, JSON-representable values."""

import json
from dataclasses import dataclass
from typing import Any

from bastion.gateway.errors import GatewayError


def reject_constant(name: str) -> Any:
    """`json.loads` parse_constant hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def json_depth(value: Any) -> int:
    """How deeply objects and arrays nest in `value` (a scalar is depth 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children if isinstance(child, dict | list))
    return deepest


@dataclass(frozen=True)
class ArgumentLimits:
    """Bounds on one call's arguments, checked on every surface (REST, streaming, MCP) before policy."""

    max_bytes: int
    max_depth: int

    def check(self, tool: str, args: dict[str, Any]) -> None:
        """Raise a GatewayError when `args` are too large, too deep, or hold values JSON cannot carry."""
        depth = json_depth(args)
        if depth > self.max_depth:
            raise GatewayError("arguments-too-deep", "Arguments nested too deeply",
                               f"Arguments for {tool} nest {depth} levels deep; the limit is {self.max_depth} "
                               "(BASTION_MAX_ARGS_DEPTH).", tool=tool)
        try:
            size = len(json.dumps(args, ensure_ascii=False, allow_nan=False).encode("utf-8"))
        except ValueError as exc:
            raise GatewayError("invalid-argument-value", "Invalid argument value",
                               f"Arguments for {tool} hold a value JSON cannot carry: {exc}. "
                               "Send finite numbers and valid Unicode text.", tool=tool) from exc
        if size > self.max_bytes:
            raise GatewayError("arguments-too-large", "Arguments too large",
                               f"Arguments for {tool} are {size} bytes as JSON; the limit is {self.max_bytes} "
                               "(BASTION_MAX_ARGS_BYTES).", tool=tool, limit_bytes=self.max_bytes)
