"""`bastion policy ...`: test bundles locally, and push, list, diff, activate, roll back, shadow and replay them
on a running gateway."""

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

policy_app = typer.Typer(help="Policy bundles: test, push, list, diff, activate, rollback, eval.",
                         no_args_is_help=True)
console = Console()
errors = Console(stderr=True)

Url = Annotated[str, typer.Option(envvar="BASTION_URL", help="Gateway base URL")]
AdminKey = Annotated[str, typer.Option(envvar="BASTION_ADMIN_KEY", help="Admin key of that gateway")]
DEFAULT_URL = "http://127.0.0.1:8080"


def _request(method: str, url: str, admin_key: str, path: str, body: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
    """Call the gateway's admin API; print the problem and exit 1 on an error answer."""
    if not admin_key:
        errors.print("[red]An admin key is needed[/red]: pass --admin-key or set BASTION_ADMIN_KEY.")
        raise typer.Exit(2)
    try:
        response = httpx.request(method, url.rstrip("/") + path, json=body, params=params, timeout=120,
                                 headers={"Authorization": f"Bearer {admin_key}"})
    except httpx.HTTPError as exc:
        errors.print(f"[red]gateway unreachable[/red] at {url}: {exc}")
        raise typer.Exit(2) from exc
    if response.status_code >= 400:
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        errors.print(f"[red]{problem.get('title', response.status_code)}[/red]: "
                     f"{problem.get('detail', response.text)}")
        for error in problem.get("errors", []):
            errors.print(f"  {error.get('text') or error}")
        raise typer.Exit(1)
    return response.json()


def _print_report(report: dict[str, Any], tests: list[dict[str, Any]], out: Console = console) -> None:
    for error in report["errors"]:
        errors.print(f"[red]error[/red] {error['text']}")
    for test in tests:
        mark = "[green]PASS[/green]" if test["passed"] else "[red]FAIL[/red]"
        note = " (input lifted)" if test["input_lifted"] else ""
        line = f"{mark} {test['name']} ({test['file']}:{test['line']}){note}"
        out.print(line + (f": {test['error']}" if test["error"] else ""))


@policy_app.command("test")
def test(directory: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz: .rego, *_test.rego, data "
                                                       "files")],
         coverage: Annotated[bool, typer.Option("--coverage", help="Print the coverage report of `opa test "
                                                "--coverage` (JSON) instead of the test lines")] = False) -> None:
    """Compile, schema-check and run the bundle's tests locally, each in a contained evaluator (as opa test)."""
    from bastion.policy.bundle_files import read_bundle_source
    from bastion.policy.errors import PolicyBundleError
    from bastion.policy.validation import read_upload, validate

    try:
        upload = read_upload(*read_bundle_source(directory))
    except PolicyBundleError as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    report = validate(upload, coverage=coverage)
    if coverage and report.coverage is not None:
        _print_report(report.to_json(), [test.to_json() for test in report.failed_tests], out=errors)
        print(json.dumps(report.coverage.to_json(), indent=2))
        if not report.ok:
            raise typer.Exit(1)
        return
    _print_report(report.to_json(), [test.to_json() for test in report.tests])
    passed = sum(test.passed for test in report.tests)
    console.print(f"{passed}/{len(report.tests)} tests passed, revision {report.revision}")
    if report.reads_input is None:
        console.print("reads all of input (it uses input other than by fixed paths, so every decision sends it whole)")
    else:
        console.print(f"reads {', '.join(report.reads_input)} (only these parts of input are sent to the evaluator)")
    if not report.ok:
        raise typer.Exit(1)


@policy_app.command("push")
def push(directory: Annotated[Path, typer.Argument(help="Bundle directory or .tar.gz")],
         message: Annotated[str, typer.Option("--message", "-m", help="What this version changes")],
         author: Annotated[str, typer.Option(help="Who wrote it")] = "bastion-cli",
         url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Upload a bundle as a new version (validated and tested on the gateway; not activated)."""
    from bastion.policy.bundle_files import read_bundle_source
    from bastion.policy.errors import PolicyBundleError

    try:
        files, data = read_bundle_source(directory)
    except PolicyBundleError as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    version = _request("POST", url, admin_key, "/v1/policies",
                       {"files": files, "data": data, "author": author, "message": message})
    console.print(f"[green]stored version {version['version']}[/green] revision {version['revision']}, "
                  f"{version['tests_passed']} tests passed. Activate with: bastion policy activate "
                  f"{version['version']}")


@policy_app.command("list")
def list_versions(url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Stored versions, newest first, marking the active, previous and shadow ones."""
    listing = _request("GET", url, admin_key, "/v1/policies")
    active = listing["active_version"]
    console.print(f"active: {active if active is not None else 'bundled default'} (revision "
                  f"{listing['revision']}), previous: {listing['previous_version']}, "
                  f"shadow: {listing['shadow_version']}")
    for version in listing["versions"]:
        marks = [name for name, key in (("active", "active_version"), ("previous", "previous_version"),
                                        ("shadow", "shadow_version")) if listing[key] == version["version"]]
        console.print(f"{version['version']:>4}  {version['revision']}  {version['created_at'][:19]}  "
                      f"{version['author']}: {version['message']}" + (f"  [{', '.join(marks)}]" if marks else ""))


@policy_app.command("diff")
def diff(a: int, b: int, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Unified diff of two stored versions (0: the bundled default)."""
    answer = _request("GET", url, admin_key, "/v1/policies/diff", params={"a": a, "b": b})
    if not answer["files"]:
        console.print("no differences")
    for text in answer["files"].values():
        console.print(text, end="", markup=False, highlight=False)


@policy_app.command("activate")
def activate(version: int, url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Put a stored version in force on every gateway worker (audited)."""
    state = _request("POST", url, admin_key, f"/v1/policies/{version}/activate")
    console.print(f"[green]version {state['active_version']} active[/green] (revision {state['revision']}; "
                  f"was {state['previous_version']})")


@policy_app.command("rollback")
def rollback(to: Annotated[int | None, typer.Option(help="Version to roll back to (default: the previous)")] = None,
             url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Put the previously active version (or --to N) back in force (audited)."""
    state = _request("POST", url, admin_key, "/v1/policies/rollback", {"to": to})
    active = state["active_version"]
    console.print(f"[green]rolled back[/green]: {active if active is not None else 'bundled default'} active "
                  f"(revision {state['revision']})")


@policy_app.command("shadow")
def shadow(version: Annotated[int | None, typer.Argument(help="Version to shadow (omit with --stop)")] = None,
           stop: Annotated[bool, typer.Option(help="Stop shadowing")] = False,
           url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Evaluate a version beside the active one on live calls, or show what it has done differently."""
    if stop:
        _request("DELETE", url, admin_key, "/v1/policies/shadow")
        console.print("shadow stopped")
    elif version is not None:
        _request("POST", url, admin_key, f"/v1/policies/{version}/shadow")
        console.print(f"version {version} is shadowed; see `bastion policy shadow` for differences")
    else:
        report = _request("GET", url, admin_key, "/v1/policies/shadow/report")
        console.print(f"version {report['shadow_version']}: {report['differing']} of {report['compared']} "
                      "calls decided differently")
        for row in report["differences"]:
            console.print(f"  {row['call_id']} {row['tool']}: active allow={row['active_allow']} "
                          f"{row['active_reasons']} / shadow allow={row['shadow_allow']} {row['shadow_reasons']}")


@policy_app.command("replay")
def replay(version: Annotated[int, typer.Argument(help="Candidate version (0: the bundled default)")],
           limit: Annotated[int, typer.Option(help="How many recent decisions")] = 1000,
           url: Url = DEFAULT_URL, admin_key: AdminKey = "") -> None:
    """Impact analysis: how a version would have decided the last N audited calls, its rules' changes apart from
    those of revocations made or lifted since."""
    report = _request("POST", url, admin_key, f"/v1/policies/{version}/replay", {"limit": limit})
    console.print(f"replayed {report['replayed']}, by the candidate's rules: {report['allow_to_deny']} allow→deny, "
                  f"{report['deny_to_allow']} deny→allow, {report['reasons_changed']} with other reasons, "
                  f"{report['errors']} errors")
    for kind, examples in report["examples"].items():
        for example in examples:
            console.print(f"  {kind} {example['call_id']} {example['tool']}: {example['recorded_reasons']} → "
                          f"{example['candidate_reasons']}")
    since = report["revocations"]
    console.print(f"by revocations made or lifted since: {since['allow_to_deny']} allow→deny, "
                  f"{since['deny_to_allow']} deny→allow, {since['reasons_changed']} with other reasons")
    for kind, examples in since["examples"].items():
        for example in examples:
            console.print(f"  {kind} {example['call_id']} {example['tool']}: {example['then_reasons']} → "
                          f"{example['now_reasons']}")


@policy_app.command("eval")
def evaluate(input_file: Annotated[Path, typer.Option("--input", help="JSON file holding the decision input")],
             directory: Annotated[Path | None, typer.Option("--dir", help="Bundle directory (default: bundled)")]
             = None,
             explain_rules: Annotated[bool, typer.Option("--explain", help="Name the rules behind each reason "
                                                         "(from OPA's trace)")] = False) -> None:
    """Decide one input locally; with --explain, show which rules produced each reason."""
    from bastion.policy.bundle import PolicyBundle, default_bundle_dir
    from bastion.policy.errors import PolicyError
    from bastion.policy.explain import explain
    from bastion.policy.types import DecisionInput

    try:
        document = DecisionInput.model_validate(json.loads(input_file.read_text())).model_dump(mode="json")
        explanation = explain(PolicyBundle.load(directory or default_bundle_dir()), {}, document)
    except (OSError, ValueError, ValidationError, PolicyError) as exc:
        errors.print(f"[red]error[/red] {exc}")
        raise typer.Exit(1) from exc
    decision = explanation.decision
    console.print(("[green]allow[/green]" if decision.allow else "[red]deny[/red]") +
                  f" (revision {decision.revision})")
    for reason in decision.reasons:
        sources = explanation.sources.get(reason, [])
        where = ", ".join(str(source) for source in sources) or "the decision document itself"
        console.print(f"  {reason}" + (f"\n    ← {where}" if explain_rules else ""), markup=False, highlight=False)
    if decision.obligations:
        console.print("obligations: " + json.dumps(decision.obligations, sort_keys=True), markup=False,
                      highlight=False)
