"""Coverage of policy tests in the shape `opa test --coverage` reports it, merged over every test's evaluation."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class CoverageReport:
    """Lines evaluated (covered) and lines holding statements never evaluated (not covered), per file."""

    covered: dict[str, set[int]] = field(default_factory=dict)
    not_covered: dict[str, set[int]] = field(default_factory=dict)

    def add(self, report: Mapping[str, Any] | None) -> None:
        """Merge one evaluation's report, as OPA's `cover` tracer writes it."""
        for file, lines in ((report or {}).get("files") or {}).items():
            self.covered.setdefault(file, set()).update(_rows(lines.get("covered")))
            self.not_covered.setdefault(file, set()).update(_rows(lines.get("not_covered")))

    def to_json(self) -> dict[str, Any]:
        """`{"files": {file: {covered, not_covered, covered_lines, not_covered_lines, coverage}}, totals}`."""
        files: dict[str, Any] = {}
        total_covered = total_missed = 0
        for file in sorted(set(self.covered) | set(self.not_covered)):
            covered = self.covered.get(file, set())
            missed = self.not_covered.get(file, set()) - covered
            total_covered, total_missed = total_covered + len(covered), total_missed + len(missed)
            entry: dict[str, Any] = {"covered_lines": len(covered), "not_covered_lines": len(missed),
                                     "coverage": _percent(len(covered), len(missed))}
            if covered:
                entry["covered"] = _ranges(covered)
            if missed:
                entry["not_covered"] = _ranges(missed)
            files[file] = entry
        return {"files": files, "covered_lines": total_covered, "not_covered_lines": total_missed,
                "coverage": _percent(total_covered, total_missed)}


def _rows(ranges: Iterable[Mapping[str, Any]] | None) -> set[int]:
    """Every row a list of `{start: {row}, end: {row}}` ranges spans."""
    rows: set[int] = set()
    for span in ranges or []:
        rows.update(range(int(span["start"]["row"]), int(span["end"]["row"]) + 1))
    return rows


def _ranges(rows: set[int]) -> list[dict[str, dict[str, int]]]:
    """Sorted rows as runs of consecutive lines."""
    runs: list[dict[str, dict[str, int]]] = []
    for row in sorted(rows):
        if runs and runs[-1]["end"]["row"] == row - 1:
            runs[-1]["end"]["row"] = row
        else:
            runs.append({"start": {"row": row}, "end": {"row": row}})
    return runs


def _percent(covered: int, missed: int) -> float:
    """Covered share of the lines, in percent with two decimals (100 when there is nothing to cover)."""
    total = covered + missed
    return 100.0 if total == 0 else round(covered * 100 / total, 2)
