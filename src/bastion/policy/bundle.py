"""A policy bundle: Rego modules plus a base data document, identified by a content revision."""

import hashlib
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from bastion.policy.bundle_files import read_bundle_source
from bastion.policy.errors import PolicyBundleError
from bastion.policy.input_paths import InputPaths, referenced_input_paths

DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"


@dataclass(frozen=True)
class PolicyBundle:
    """Rego sources by module name and the data document they read (`data`)."""

    modules: dict[str, str]
    data: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def revision(self) -> str:
        """Short sha256 over the sorted module names and sources and the data document."""
        canonical = json.dumps(
            {"modules": sorted(self.modules.items()), "data": self.data},
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @cached_property
    def input_paths(self) -> InputPaths | None:
        """The parts of `input` the modules read (None: all of it); decisions send rego-cpp only these."""
        return referenced_input_paths(self.modules.values())

    @classmethod
    def load(cls, source: Path | str) -> "PolicyBundle":
        """Load a bundle directory or `.tar.gz` as OPA does: every `*.rego` but `*_test.rego`, and its data files
        merged at their directories' paths."""
        files, data = read_bundle_source(source)
        modules = {name: text for name, text in files.items() if not name.endswith(TEST_SUFFIX)}
        if not modules:
            raise PolicyBundleError(f"policy bundle {source} has no .rego modules")
        return cls(modules=modules, data=data or {})


def default_bundle_dir() -> Path:
    """The directory of the default policy bundle shipped with bastion."""
    return Path(__file__).parent / "bundles" / "default"


def load_default_bundle() -> PolicyBundle:
    """The default policy bundle shipped with bastion."""
    return PolicyBundle.load(default_bundle_dir())
