"""Expose bastion's tools to LangChain: each becomes a `StructuredTool` whose calls run through the gateway.

A refusal (policy, limits, schema) becomes a ToolException, which LangChain hands back to the model as the
tool's answer, so the model reads the policy's reasons instead of the agent crashing.

    from bastion_client import BastionClient
    from examples.langchain_tools import bastion_tools
    with BastionClient(url, key) as bastion, bastion.create_session() as session:
        agent = create_agent(model, tools=bastion_tools(session))
"""

from typing import Any

from langchain_core.tools import StructuredTool, ToolException

from bastion_client import BastionError, Session, ToolInfo


def langchain_name(tool_name: str) -> str:
    """Function-calling names allow letters, digits, '_' and '-': 'fs.read' becomes 'fs_read'."""
    return tool_name.replace(".", "_")


def bastion_tool(session: Session, tool: ToolInfo) -> StructuredTool:
    """One bastion tool as a LangChain tool bound to `session`."""

    def run(**kwargs: Any) -> str:
        try:
            result = session.call(tool.name, kwargs)
        except BastionError as exc:
            raise ToolException(str(exc)) from exc
        if result.data is not None and not result.stdout:
            return str(result.data)
        text = result.stdout + (f"\n[stderr]\n{result.stderr}" if result.stderr else "")
        return text if result.ok else f"{text}\n[exit code {result.exit_code}]"

    return StructuredTool.from_function(func=run, name=langchain_name(tool.name), description=tool.description,
                                        args_schema=tool.input_schema, handle_tool_error=True)


def bastion_tools(session: Session, names: set[str] | None = None) -> list[StructuredTool]:
    """Every tool the gateway offers (or those in `names`) as LangChain tools bound to `session`."""
    tools = [tool for tool in session.client.tools() if names is None or tool.name in names]
    converted = [bastion_tool(session, tool) for tool in tools]
    if len({t.name for t in converted}) != len(converted):
        raise ValueError("two bastion tools map to the same LangChain name; pass `names` to choose")
    return converted
