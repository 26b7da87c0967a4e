"""Bundle modules as OPA policy documents: one per package, so rules that refer to each other upload together.

OPA compiles every `PUT /v1/policies/{id}` against the policies it already holds, so two modules of one
package that use each other's rules cannot be uploaded one at a time. Modules of a package are joined
into one document; `package` and `import` lines are blanked (not removed) so each module keeps its line
numbers after a fixed offset, and OPA's error locations map back to `file:line:col`.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass

from bastion.policy.errors import PolicyBundleError
from bastion.policy.rego_source import package_of

_IMPORT = re.compile(r"^import\s+\S.*$")
_PACKAGE_LINE = re.compile(r"^package\s+\S+\s*$")


@dataclass(frozen=True)
class Origin:
    """Where one module sits in a joined document: its file and the document line of its first line."""

    file: str
    first_line: int
    line_count: int


@dataclass(frozen=True)
class OpaDocument:
    """One OPA policy document: its text and the modules it was joined from."""

    package: str
    text: str
    origins: tuple[Origin, ...]

    def locate(self, row: int) -> tuple[str, int]:
        """The (file, line) a document row came from; a row past the end (OPA's `unexpected eof`) is the last
        module's."""
        for origin in self.origins:
            if origin.first_line <= row < origin.first_line + origin.line_count:
                return origin.file, row - origin.first_line + 1
        if self.origins and row >= self.origins[-1].first_line:
            return self.origins[-1].file, row - self.origins[-1].first_line + 1
        return self.origins[0].file if self.origins else self.package, row


def documents_by_package(modules: Mapping[str, str]) -> dict[str, OpaDocument]:
    """The bundle's modules joined per package; PolicyBundleError for a module without a package."""
    grouped: dict[str, list[tuple[str, str]]] = {}
    for file, source in sorted(modules.items()):
        package = package_of(source)
        if package is None:
            raise PolicyBundleError(f"{file}: no `package` declaration")
        grouped.setdefault(package, []).append((file, source))
    return {package: _join(package, members) for package, members in grouped.items()}


def _join(package: str, members: list[tuple[str, str]]) -> OpaDocument:
    imports: list[str] = []
    bodies: list[str] = []
    origins: list[Origin] = []
    for _, source in members:
        for line in source.splitlines():
            if _IMPORT.match(line) and line.strip() not in imports:
                imports.append(line.strip())
    header = [f"package {package}", *imports, ""]
    line = len(header) + 1
    for file, source in members:
        lines = ["" if _IMPORT.match(text) or _PACKAGE_LINE.match(text) else text for text in source.splitlines()]
        origins.append(Origin(file=file, first_line=line, line_count=len(lines)))
        bodies.extend(lines)
        line += len(lines)
    return OpaDocument(package=package, text="\n".join(header + bodies) + "\n", origins=tuple(origins))
