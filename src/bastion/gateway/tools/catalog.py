"""The tools agents can call: the built-ins plus the newest version of each registered custom tool."""

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from sqlalchemy import Engine, func
from sqlmodel import Session, select

from bastion.gateway.db.tables import CustomToolVersion, utcnow
from bastion.gateway.tools.builtin import BUILTIN_TOOLS, Tool
from bastion.gateway.tools.custom import CustomToolSpec, ToolDefinitionError


@dataclass(frozen=True)
class CustomTool(Tool):
    """A registered tool: a Tool whose validator also applies the argv rules of its template."""

    spec: CustomToolSpec | None = None
    versions: tuple[int, ...] = ()

    @cached_property
    def validator(self):  # type: ignore[override]
        """The schema plus argv checks of the definition."""
        assert self.spec is not None
        return self.spec.validator

    def public(self) -> dict[str, Any]:
        """The listing entry, with the definition's limits, egress allowlist and every version."""
        assert self.spec is not None
        return {**super().public(), "custom": True, "versions": [str(v) for v in self.versions],
                "command": self.spec.command, "egress": self.spec.egress,
                "limits": {"timeout_s": self.spec.timeout_s, "max_output_bytes": self.spec.max_output_bytes},
                "files": sorted(self.spec.files), "image": self.spec.image}


def spec_of(row: CustomToolVersion) -> CustomToolSpec:
    """The definition stored in a row."""
    return CustomToolSpec(name=row.name, version=row.version, description=row.description,
                          input_schema=row.input_schema, command=list(row.command), risk=row.risk,
                          effects=tuple(row.effects),
                          egress=list(row.egress), timeout_s=row.timeout_s, max_output_bytes=row.max_output_bytes,
                          files=dict(row.files), image=row.image)


def as_tool(spec: CustomToolSpec, versions: tuple[int, ...], default_timeout_s: float) -> CustomTool:
    """The callable tool for one definition; calls run for its own timeout (never one from the arguments)."""
    return CustomTool(name=spec.name, description=spec.description, input_schema=spec.input_schema,
                      to_request=spec.to_request, risk=spec.risk, effects=spec.declared_effects,
                      version=str(spec.version),
                      network=bool(spec.egress), timeout_s=spec.timeout_s or default_timeout_s, files=spec.files,
                      egress=tuple(spec.egress), image=spec.image, spec=spec, versions=versions)


class ToolCatalog:
    """Holds `tools` (the dict the call pipeline reads) and persists custom tool versions."""

    def __init__(self, engine: Engine, default_timeout_s: float) -> None:
        self._engine = engine
        self._default_timeout_s = default_timeout_s
        self.tools: dict[str, Tool] = dict(BUILTIN_TOOLS)

    def load(self) -> int:
        """Load the newest version of every live custom tool; return how many."""
        with Session(self._engine) as db:
            rows = list(db.exec(select(CustomToolVersion).where(CustomToolVersion.retired_at.is_(None))  # type: ignore[union-attr]
                                .order_by(CustomToolVersion.name, CustomToolVersion.version)))
        grouped: dict[str, list[CustomToolVersion]] = {}
        for row in rows:
            grouped.setdefault(row.name, []).append(row)
        for name, versions in grouped.items():
            self.tools[name] = as_tool(spec_of(versions[-1]), tuple(v.version for v in versions),
                                      self._default_timeout_s)
        return len(grouped)

    def register(self, spec: CustomToolSpec, created_by: str) -> CustomTool:
        """Validate and store a definition as the tool's next version; it is callable at once."""
        if spec.name in BUILTIN_TOOLS:
            raise ToolDefinitionError(f"{spec.name!r} is a built-in tool; choose another name")
        spec.validate()
        with Session(self._engine) as db:
            last = db.exec(select(func.max(CustomToolVersion.version)).where(CustomToolVersion.name == spec.name)).one()
            version = (last or 0) + 1
            db.add(CustomToolVersion(name=spec.name, version=version, description=spec.description,
                                     input_schema=spec.input_schema, command=spec.command, risk=spec.risk,
                                     effects=list(spec.effects), egress=spec.egress, timeout_s=spec.timeout_s,
                                     max_output_bytes=spec.max_output_bytes, files=spec.files, image=spec.image,
                                     created_by=created_by))
            for older in db.exec(select(CustomToolVersion).where(CustomToolVersion.name == spec.name,
                                                                 CustomToolVersion.retired_at.is_not(None))):  # type: ignore[union-attr]
                older.retired_at = None
                db.add(older)
            db.commit()
            versions = tuple(db.exec(select(CustomToolVersion.version).where(CustomToolVersion.name == spec.name)
                                     .order_by(CustomToolVersion.version)))
        stored = replace(spec, version=version)
        tool = as_tool(stored, versions, self._default_timeout_s)
        self.tools[spec.name] = tool
        return tool

    def history(self, name: str) -> list[CustomToolVersion]:
        """Every stored version of a custom tool, oldest first."""
        with Session(self._engine) as db:
            return list(db.exec(select(CustomToolVersion).where(CustomToolVersion.name == name)
                                .order_by(CustomToolVersion.version)))

    def retire(self, name: str) -> bool:
        """Stop offering a custom tool (its versions stay for the audit trail); False if it is not live."""
        if not isinstance(self.tools.get(name), CustomTool):
            return False
        with Session(self._engine) as db:
            for row in db.exec(select(CustomToolVersion).where(CustomToolVersion.name == name)):
                row.retired_at = utcnow()
                db.add(row)
            db.commit()
        del self.tools[name]
        return True
