"""Differences between two policy versions: a unified diff per changed file, data.json included."""

import difflib
import json
from collections.abc import Mapping
from typing import Any

from bastion.policy.bundle import DATA_FILE


def bundle_diff(old_files: Mapping[str, str], old_data: Mapping[str, Any], new_files: Mapping[str, str],
                new_data: Mapping[str, Any], old_label: str, new_label: str) -> dict[str, str]:
    """Unified diffs by file name (only changed files; data.json compared as sorted, indented JSON)."""
    old = {**old_files, DATA_FILE: _data_text(old_data)}
    new = {**new_files, DATA_FILE: _data_text(new_data)}
    diffs = {}
    for name in sorted(set(old) | set(new)):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        lines = difflib.unified_diff((before or "").splitlines(keepends=True), (after or "").splitlines(keepends=True),
                                     fromfile=f"{old_label}/{name}" if before is not None else "/dev/null",
                                     tofile=f"{new_label}/{name}" if after is not None else "/dev/null")
        diffs[name] = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
    return diffs


def _data_text(data: Mapping[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
