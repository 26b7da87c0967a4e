"""Policy unit tests (`*_test.rego`, like `opa test`), upload validation, explanations and diffs."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.gateway.cli.app import app as cli
from bastion.policy.bundle import default_bundle_dir, load_default_bundle
from bastion.policy.bundle_files import read_bundle_source
from bastion.policy.diff import bundle_diff
from bastion.policy.errors import PolicyBundleError, PolicyCompileError
from bastion.policy.explain import explain
from bastion.policy.rego_source import top_level_rules, with_input_terms
from bastion.policy.testing import run_policy_tests, run_tests
from bastion.policy.validation import read_upload, validate
from tests.support.policies import call

REPRO_P = "package p\n\nimport rego.v1\n\nd if input.u == 1\n\nallow if d\n"
REPRO_TESTS = """package p_test

import rego.v1

import data.p

test_allow if p.allow with input as {"u": 1}

test_deny if not p.allow with input as {"u": 2}

test_two_inputs if {
	p.allow with input as {"u": 1}
	not p.allow with input as {"u": 2}
}

test_wrong if p.allow with input as {"u": 3}

test_plain if 1 + 1 == 2
"""


def outcomes(results: list) -> dict[str, tuple[bool, str | None]]:
    return {result.name.rsplit(".", 1)[1]: (result.passed, result.error) for result in results}


def test_tests_run_as_opa_test_runs_them_with_input_as_and_all() -> None:
    results = run_policy_tests({"p.rego": REPRO_P}, {"p_test.rego": REPRO_TESTS}, {}, engine="opa")
    assert outcomes(results) == {
        "test_allow": (True, None), "test_deny": (True, None), "test_two_inputs": (True, None),
        "test_wrong": (False, "the test rule is undefined (some expression in it was false)"),
        "test_plain": (True, None)}
    assert not any(result.input_lifted for result in results)
    assert [(r.file, r.line) for r in results if r.name.endswith("test_wrong")] == [("p_test.rego", 16)]


OPA_SEMANTICS = """package q_test

import rego.v1

test_twice if 1 == 1

test_twice if 1 == 2

test_cases[note] if {
	some note, value in {"one": 1, "two": 2, "three": 3}
	value < 3
}

test_not_true := 7

todo_test_later if false

test_no_input if not input.anything

test_data_replaced if data.q.limit == 5 with data.q.limit as 5
"""


def test_duplicate_partial_object_skipped_and_non_true_tests_fail_or_pass_as_in_opa() -> None:
    results = outcomes(run_policy_tests({"q.rego": "package q\n\nlimit := 3\n"}, {"q_test.rego": OPA_SEMANTICS},
                                        {}, engine="opa"))
    assert results == {
        "test_twice": (True, None),
        "test_twice#01": (False, "the test rule is undefined (some expression in it was false)"),
        "test_cases": (False, "failed cases: three"),
        "test_not_true": (False, "the test rule is 7, not true"),
        "test_no_input": (True, None),
        "test_data_replaced": (True, None),
    }


def test_coverage_is_reported_as_opa_test_coverage_reports_it() -> None:
    policy = "package p\n\nimport rego.v1\n\nallow if input.u == 1\n\nexplain := \"never\" if {\n\tinput.u == 9\n}\n"
    tests = "package p_test\n\nimport rego.v1\n\ntest_allow if data.p.allow with input as {\"u\": 1}\n"
    run = run_tests({"p.rego": policy}, {"p_test.rego": tests}, {}, engine="opa", coverage=True)
    assert [outcome.passed for outcome in run.outcomes] == [True]
    assert run.coverage is not None
    report = run.coverage.to_json()
    assert report["files"]["p.rego"]["covered"] == [{"start": {"row": 5}, "end": {"row": 5}}]
    assert report["files"]["p.rego"]["not_covered"] == [{"start": {"row": 7}, "end": {"row": 8}}]
    assert report["files"]["p.rego"]["coverage"] == round(100 / 3, 2)
    assert report["files"]["p_test.rego"]["coverage"] == 100
    with pytest.raises(PolicyCompileError, match="coverage needs OPA's evaluator"):
        run_tests({"p.rego": policy}, {"p_test.rego": tests}, {}, engine="regocpp", coverage=True)


def test_on_rego_cpp_the_issue_repro_runs_input_lifted_and_a_crashing_test_fails_alone() -> None:
    results = run_policy_tests({"p.rego": REPRO_P}, {"p_test.rego": REPRO_TESTS}, {}, engine="regocpp")
    by_name = outcomes(results)
    assert by_name["test_allow"] == (True, None)
    assert by_name["test_deny"] == (True, None)
    assert by_name["test_plain"] == (True, None)
    assert by_name["test_wrong"] == (False, "the test rule is undefined (some expression in it was false)")
    passed, error = by_name["test_two_inputs"]
    assert not passed and error is not None and "evaluator crashed (SIGABRT)" in error
    lifted = {result.name.rsplit(".", 1)[1]: result.input_lifted for result in results}
    assert lifted == {"test_allow": True, "test_deny": True, "test_two_inputs": False, "test_wrong": True,
                      "test_plain": False}
    assert [(r.file, r.line) for r in results if r.name.endswith("test_wrong")] == [("p_test.rego", 16)]


@pytest.mark.parametrize("engine", ["opa", "regocpp"])
def test_the_default_library_ships_passing_tests(engine: str) -> None:
    upload = read_upload(*read_bundle_source(default_bundle_dir()))
    assert "library_test.rego" in upload.tests
    results = run_policy_tests(upload.bundle.modules, upload.tests, upload.bundle.data, engine=engine)
    assert len(results) >= 8
    assert [(r.name, r.error) for r in results if not r.passed] == []


def test_a_test_module_that_does_not_compile_is_a_located_error() -> None:
    broken = "package p_test\n\nimport rego.v1\n\ntest_x if {\n\t1 == 1\n}\n\ntest_y if {\n"
    with pytest.raises(PolicyCompileError, match=r"p_test\.rego:10:11: rego_parse_error: unexpected eof token"):
        run_policy_tests({"p.rego": REPRO_P}, {"p_test.rego": broken}, {}, engine="opa")
    with pytest.raises(PolicyCompileError, match=r"p_test\.rego:9:11: this is unclosed"):
        run_policy_tests({"p.rego": REPRO_P}, {"p_test.rego": broken}, {}, engine="regocpp")


def test_validation_accepts_the_default_bundle_and_reports_its_tests() -> None:
    report = validate(read_upload(*read_bundle_source(default_bundle_dir())))
    assert report.ok, report.to_json()
    assert report.revision == load_default_bundle().revision
    assert report.to_json()["tests"]["passed"] == len(report.tests) >= 8


def test_validation_locates_syntax_errors_by_file_line_and_column() -> None:
    files, data = read_bundle_source(default_bundle_dir())
    files["extra.rego"] = "package bastion.authz\n\nimport rego.v1\n\ndeny contains msg if {\n"
    report = validate(read_upload(files, data))
    assert not report.ok and report.tests == []
    assert any(e.file == "extra.rego" and e.line == 6 and e.column is not None for e in report.errors), report.errors


def test_validation_reports_failing_tests_with_their_location() -> None:
    files, data = read_bundle_source(default_bundle_dir())
    files["strict_test.rego"] = ("package bastion.strict_test\n\nimport rego.v1\n\n"
                                 "test_everything_denied if not data.bastion.authz.decision.allow with input as "
                                 + json.dumps(call("fs.list", {}).model_dump(mode="json")) + "\n")
    report = validate(read_upload(files, data))
    assert not report.ok and report.errors == []
    assert [(t.name, t.file, t.line) for t in report.failed_tests] == [
        ("data.bastion.strict_test.test_everything_denied", "strict_test.rego", 5)]


def test_validation_checks_the_config_schema_and_reserved_data() -> None:
    files, data = read_bundle_source(default_bundle_dir())
    assert data is not None
    data["bastion"]["config"]["roles"]["reader"]["max_timeout_s"] = "thirty"
    data["bastion"]["revocations"] = {}
    report = validate(read_upload(files, data))
    texts = [str(error) for error in report.errors]
    assert "data.json: data.bastion.config.roles.reader.max_timeout_s: 'thirty' is not of type 'number'" in texts
    assert any("data.bastion.revocations is written by the gateway" in text for text in texts)


def test_validation_refuses_a_policy_that_cannot_decide_the_sample_call() -> None:
    undefined = 'package bastion.authz\n\nimport rego.v1\n\ndecision := {"allow": true} if false\n'
    report = validate(read_upload({"authz.rego": undefined}, None))
    assert [str(e) for e in report.errors] == [
        "policy compiled but cannot decide a sample shell.run call: the decision is undefined"]


@pytest.mark.parametrize(("files", "message"), [
    ({}, "no files"),
    ({"../escape.rego": "package x"}, "not a relative file name"),
    ({"/abs.rego": "package x"}, "not a relative file name"),
    ({"notes.txt": "hi", "a.rego": "package x"}, "only .rego files and data files"),
    ({"a_test.rego": "package x"}, "no policy modules"),
    ({"a.rego": "package x", "data.json": "[1]"}, "must hold an object, not list"),
    ({"a.rego": "package x", "data.json": "{nope"}, r"data.json:1:2: not valid JSON"),
])
def test_uploads_with_bad_files_say_what_is_wrong(files: dict[str, str], message: str) -> None:
    with pytest.raises(PolicyBundleError, match=message):
        read_upload(files, None)


@pytest.mark.parametrize("engine", ["opa", "regocpp"])
def test_explanations_name_the_rules_behind_each_reason(engine: str) -> None:
    document = call("fs.read", {"path": "../etc/shadow"}, roles=("nobody",)).model_dump(mode="json")
    explanation = explain(load_default_bundle(), {"agents": {"agent-1": {"reason": "leak"}}}, document,
                          engine=engine)
    sources = {reason: [str(s) for s in rules] for reason, rules in explanation.sources.items()}
    assert explanation.decision.reasons[0] == "revoked"
    assert sources == {
        'agent "agent-1" is revoked: leak': ["revocations.rego:7 (revoked)"],
        'path "../etc/shadow" has a ".." segment; paths must stay inside /workspace': ["workspace.rego:35 (deny)"],
        'tool "fs.read" is not granted to roles ["nobody"]': ["grants.rego:13 (deny)"],
    }
    assert explanation.to_json()["reasons"][0] == {"reason": "revoked", "rules": []}


def test_with_input_terms_are_read_whole() -> None:
    text = 'x if f(1) with input as {"a": "}", "b": [1, {"c": 2}]} with data.d as 3\ny if z with input as make("a(")'
    assert [term for _, _, term in with_input_terms(text)] == ['{"a": "}", "b": [1, {"c": 2}]}', 'make("a(")']
    preamble, rules = top_level_rules("package p\n\nimport rego.v1\n\n# c\nr if {\n\t1 == 1\n}\n\ns := 2\n")
    assert preamble.startswith("package p") and [(r.name, r.line) for r in rules] == [("r", 6), ("s", 10)]


def test_diffs_show_changed_files_and_data_only(tmp_path: Path) -> None:
    diffs = bundle_diff({"a.rego": "x := 1\n", "same.rego": "s\n"}, {"k": 1},
                        {"a.rego": "x := 2\n", "same.rego": "s\n", "new.rego": "n\n"}, {"k": 2}, "v1", "v2")
    assert sorted(diffs) == ["a.rego", "data.json", "new.rego"]
    assert "-x := 1\n+x := 2\n" in diffs["a.rego"]
    assert diffs["new.rego"].startswith("--- /dev/null\n+++ v2/new.rego\n")
    assert '-  "k": 1\n+  "k": 2\n' in diffs["data.json"]


def test_the_cli_reports_coverage_and_explains_with_opa(tmp_path: Path) -> None:
    runner = CliRunner()
    covered = runner.invoke(cli, ["policy", "test", str(default_bundle_dir()), "--coverage"])
    assert covered.exit_code == 0, covered.output
    report = json.loads(covered.stdout)
    assert set(report) == {"files", "covered_lines", "not_covered_lines", "coverage"}
    assert report["files"]["grants.rego"]["coverage"] == 100 and 0 < report["coverage"] < 100
    document = call("fs.read", {"path": "../x"}, roles=("nobody",)).model_dump(mode="json")
    (tmp_path / "input.json").write_text(json.dumps(document))
    explained = runner.invoke(cli, ["policy", "eval", "--input", str(tmp_path / "input.json"), "--explain"])
    assert explained.exit_code == 0, explained.output
    assert "← grants.rego:13 (deny)" in explained.output and "← workspace.rego:35 (deny)" in explained.output
    plain = runner.invoke(cli, ["policy", "eval", "--input", str(tmp_path / "input.json")])
    assert plain.exit_code == 0 and "←" not in plain.output and "grants.rego" not in plain.output
