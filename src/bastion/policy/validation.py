"""Checking an uploaded policy bundle before it may be stored: files, data schema, compile, sample, tests.

Everything that runs Rego here runs in a throwaway evaluator process, so a bundle that crashes rego-cpp
fails validation instead of taking down its caller.
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from jsonschema import Draft202012Validator

from bastion.policy.backends.supervised import check_bundle
from bastion.policy.bundle import DATA_FILE, TEST_SUFFIX, PolicyBundle
from bastion.policy.bundle_files import DATA_FILES, is_data_file, merge_data_files
from bastion.policy.config_schema import CONFIG_SCHEMA
from bastion.policy.coverage import CoverageReport
from bastion.policy.errors import PolicyBundleError, PolicyCompileError
from bastion.policy.input_paths import input_references
from bastion.policy.revocations import REVOCATIONS_KEY
from bastion.policy.testing import TestOutcome, run_tests

_LOCATED = re.compile(r"^(?P<file>[^:;]+?):(?P<line>\d+):(?P<column>\d+): (?P<message>.*)$")
_COMPILE_PREFIX = "policy failed to compile: "
_MAX_FILES = 200
_MAX_FILE_CHARS = 1_000_000


@dataclass(frozen=True)
class SourceError:
    """One problem with the bundle, located in a file when it can be."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = ":".join(str(part) for part in (self.file, self.line, self.column) if part is not None)
        return f"{where}: {self.message}" if where else self.message


@dataclass(frozen=True)
class UploadedBundle:
    """An upload split into the policy bundle and its test modules."""

    bundle: PolicyBundle
    tests: dict[str, str]

    @property
    def files(self) -> dict[str, str]:
        """Every Rego file, policies and tests, by name."""
        return {**self.bundle.modules, **self.tests}


@dataclass
class ValidationReport:
    """What validation found; `ok` only with no errors and every test passing."""

    revision: str | None
    errors: list[SourceError] = field(default_factory=list)
    tests: list[TestOutcome] = field(default_factory=list)
    reads_input: list[str] | None = None
    coverage: CoverageReport | None = None

    @property
    def ok(self) -> bool:
        """True when the bundle may be stored and activated."""
        return not self.errors and all(test.passed for test in self.tests)

    @property
    def failed_tests(self) -> list[TestOutcome]:
        """The tests that did not pass."""
        return [test for test in self.tests if not test.passed]

    def to_json(self) -> dict[str, Any]:
        """The report as the API and CLI show it."""
        return {"ok": self.ok, "revision": self.revision, "reads_input": self.reads_input,
                "errors": [{**vars(error), "text": str(error)} for error in self.errors],
                "tests": {"total": len(self.tests), "passed": sum(t.passed for t in self.tests),
                          "failed": [test.to_json() for test in self.failed_tests]}}


def read_upload(files: Mapping[str, str], data: Mapping[str, Any] | None) -> UploadedBundle:
    """Split uploaded files into policy modules, test modules and data; PolicyBundleError says what is wrong."""
    if not files:
        raise PolicyBundleError("the upload has no files; send at least one .rego module")
    if len(files) > _MAX_FILES:
        raise PolicyBundleError(f"the upload has {len(files)} files; at most {_MAX_FILES} are accepted")
    modules, tests, data_files = {}, {}, {}
    for name, text in files.items():
        _check_name(name)
        if len(text) > _MAX_FILE_CHARS:
            raise PolicyBundleError(f"{name} is larger than {_MAX_FILE_CHARS} characters")
        if is_data_file(name):
            data_files[name] = text
        elif name.endswith(TEST_SUFFIX):
            tests[name] = text
        elif name.endswith(".rego"):
            modules[name] = text
        else:
            raise PolicyBundleError(f"{name}: only .rego files and data files ({', '.join(DATA_FILES)}) belong "
                                    "in a policy bundle")
    document = merge_data_files(data_files, data) if data_files else dict(data or {})
    if not modules:
        raise PolicyBundleError("the upload has no policy modules (only tests or data)")
    return UploadedBundle(bundle=PolicyBundle(modules=modules, data=document), tests=tests)


def validate(upload: UploadedBundle, revocations: Mapping[str, Any] | None = None,
             timeout_s: float = 30.0, coverage: bool = False) -> ValidationReport:
    """Schema-check the data, compile the policy and decide a sample call, then run the tests (with `coverage`,
    keeping OPA's coverage of them)."""
    bundle = upload.bundle
    report = ValidationReport(revision=bundle.revision, errors=data_errors(bundle.data),
                              reads_input=input_references(bundle.input_paths))
    if report.errors:
        return report
    try:
        check_bundle(bundle, revocations or {}, timeout_s)
    except PolicyCompileError as exc:
        report.errors.extend(located_errors(str(exc)))
        return report
    if upload.tests:
        try:
            run = run_tests(bundle.modules, upload.tests, bundle.data, timeout_s=timeout_s, coverage=coverage)
            report.tests, report.coverage = run.outcomes, run.coverage
        except PolicyCompileError as exc:
            report.errors.extend(located_errors(str(exc)))
    return report


def data_errors(data: Mapping[str, Any]) -> list[SourceError]:
    """Schema problems of `data.bastion.config`, and a bundle that tries to set the revocations."""
    bastion = data.get("bastion", {})
    if not isinstance(bastion, Mapping):
        return [SourceError("data.bastion must be an object", file=DATA_FILE)]
    errors = []
    if REVOCATIONS_KEY in bastion:
        errors.append(SourceError("data.bastion.revocations is written by the gateway; remove it from the bundle",
                                  file=DATA_FILE))
    validator = Draft202012Validator(CONFIG_SCHEMA)
    for error in sorted(validator.iter_errors(bastion.get("config", {})), key=lambda e: list(e.absolute_path)):
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        errors.append(SourceError(f"data.bastion.config{where}: {error.message}", file=DATA_FILE))
    return errors


def located_errors(text: str) -> list[SourceError]:
    """`file:line:col: message` parts of a compile error as SourceErrors (unlocated parts kept whole)."""
    body = text.removeprefix(_COMPILE_PREFIX)
    errors = []
    for part in body.split("; "):
        match = _LOCATED.match(part)
        if match is None:
            errors.append(SourceError(part))
        else:
            errors.append(SourceError(match["message"], file=match["file"], line=int(match["line"]),
                                      column=int(match["column"])))
    return errors


def _check_name(name: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name or "\0" in name:
        raise PolicyBundleError(f"{name!r} is not a relative file name inside the bundle")
