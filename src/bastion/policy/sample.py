"""The decision input as JSON text, and the sample call every policy must decide before it is put in force."""

import json

from bastion.policy.input_paths import InputPaths, project_input
from bastion.policy.types import DecisionContext, DecisionInput, Principal, SessionInfo, ToolInfo

SAMPLE_INPUT = DecisionInput(
    principal=Principal(id="bastion-sample", roles=["developer"]),
    session=SessionInfo(id="bastion-sample", started_at="1970-01-01T00:00:00Z"),
    tool=ToolInfo(name="shell.run", risk="high"),
    args={"command": "true"},
    context=DecisionContext(time="1970-01-01T00:00:00Z"),
)


def input_json(decision_input: DecisionInput, paths: InputPaths | None = None) -> str:
    """The input document as the JSON term rego-cpp parses (keeps NUL and control characters intact),
    keeping only what lies on `paths` when given (`PolicyBundle.input_paths`)."""
    document = project_input(decision_input.model_dump(mode="json"), paths)
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


SAMPLE_JSON = input_json(SAMPLE_INPUT)
