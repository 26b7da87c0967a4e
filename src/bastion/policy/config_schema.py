"""The JSON Schema of `data.bastion.config`, the settings the default policy library reads.

Only the keys the library knows are typed; a bundle may add its own keys beside them.
"""

from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}
_POSITIVE = {"type": "number", "exclusiveMinimum": 0}
_COUNT = {"type": "integer", "minimum": 1}
_CAP = {"type": ["integer", "null"], "minimum": 1}
_CAP_KEYS = ("per_agent", "per_tenant", "memory_mb_per_agent", "memory_mb_per_tenant")
_SCORES = {"type": "object", "propertyNames": {"enum": ["low", "medium", "high"]},
           "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}}

CONFIG_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "input_version": {"type": "integer"},
        "roles": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["tools", "max_timeout_s"],
            "properties": {"tools": _STRINGS, "max_timeout_s": _POSITIVE, "egress": _STRINGS,
                           "approval_tools": _STRINGS}}},
        "workspace": {"type": "object", "required": ["root", "path_tools"],
                      "properties": {"root": {"type": "string", "pattern": "^/"}, "path_tools": _STRINGS,
                                     "path_optional": _STRINGS}},
        "egress": {"type": "object", "required": ["builtin_tools", "builtin_args", "by_tool"],
                   "properties": {"builtin_tools": _STRINGS, "builtin_args": {"$ref": "#/$defs/destination_args"},
                                  "by_tool": {"type": "object",
                                              "additionalProperties": {"$ref": "#/$defs/destination_args"}},
                                  "refused_cidrs": {"type": "array", "items": {
                                      "type": "object", "required": ["cidr", "label"],
                                      "properties": {"cidr": {"type": "string"}, "label": {"type": "string"}}}}}},
        "commands": {"type": "object", "required": ["fields", "max_chars", "deny"],
                     "properties": {
                         "fields": {"type": "object", "additionalProperties": _STRINGS},
                         "max_chars": _COUNT,
                         "deny": {"type": "array", "items": {
                             "type": "object", "required": ["label", "needles", "patterns"],
                             "properties": {"label": {"type": "string"}, "needles": _STRINGS,
                                            "patterns": _STRINGS}}}}},
        "risk": {"type": "object", "properties": {"max_score": _SCORES, "approval_score": _SCORES}},
        "runtime": {"type": "object", "properties": {"default": {"type": "string"},
                                                     "by_risk": {"type": "object",
                                                                 "additionalProperties": {"type": "string"}}}},
        "limits": {"type": "object", "properties": {
            "default": {"$ref": "#/$defs/limits"},
            "by_tool": {"type": "object", "additionalProperties": {"$ref": "#/$defs/limits"}}}},
        "redact": {"type": "object", "properties": {"tools": {"type": "object", "additionalProperties": _STRINGS}}},
        "approval": {"type": "object", "properties": {"ttl_s": {"type": "integer", "minimum": 1,
                                                                "maximum": 86400}}},
        "rate_limits": {"type": "object", "properties": {
            "agent_per_minute": _COUNT, "tool_per_minute": {"type": "object", "additionalProperties": _COUNT}}},
        "quiet_hours": {"type": "object", "required": ["hours_utc", "tools"], "properties": {
            "hours_utc": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}},
            "tools": _STRINGS, "exempt_roles": _STRINGS}},
        "session_caps": {"type": "object", "properties": {
            **{key: _CAP for key in _CAP_KEYS},
            "by_tenant": {"type": "object", "additionalProperties": {
                "type": "object", "additionalProperties": False, "properties": {key: _CAP for key in _CAP_KEYS}}}}},
        "flow": {"type": "object", "properties": {
            "secret_dirs": _STRINGS, "read_tools": _STRINGS,
            "secret_read_patterns": {"type": "object", "additionalProperties": _STRINGS},
            "egress_fields": {"type": "object", "additionalProperties": _STRINGS},
            "egress_patterns": {"type": "object", "additionalProperties": _STRINGS}}},
    },
    "$defs": {"limits": {"type": "object", "additionalProperties": False, "properties": {
        "memory_mb": _COUNT, "cpus": _POSITIVE, "pids": _COUNT, "max_output_bytes": _COUNT}},
        "destination_args": {"type": "object", "additionalProperties": False,
                             "properties": {"url": _STRINGS, "host": _STRINGS}}},
}
