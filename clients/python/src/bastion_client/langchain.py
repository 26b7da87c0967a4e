"""bastion's tools as LangChain tools (extra `bastion-client[langchain]`): each a `StructuredTool` whose calls run
through the gateway in one session.

A refusal (policy, limits, schema) becomes a ToolException, which LangChain hands back to the model as the tool's
answer, so the model reads the policy's reasons instead of the agent crashing.

    from bastion_client import BastionClient
    from bastion_client.langchain import bastion_tools
    with BastionClient(url, key) as bastion, bastion.create_session() as session:
        agent = create_agent(model, tools=bastion_tools(session))
"""

from typing import Any

from langchain_core.tools import StructuredTool, ToolException

from bastion_client.answers import answer_text
from bastion_client.errors import BastionError
from bastion_client.function_names import function_name
from bastion_client.models import ToolInfo
from bastion_client.sync import Session


def bastion_tool(session: Session, tool: ToolInfo) -> StructuredTool:
    """One bastion tool as a LangChain tool bound to `session`, named by `function_name` (`fs.read` is `fs__read`)."""

    def run(**kwargs: Any) -> str:
        try:
            return answer_text(session.call(tool.name, kwargs))
        except BastionError as exc:
            raise ToolException(str(exc)) from exc

    return StructuredTool.from_function(func=run, name=function_name(tool.name), description=tool.description,
                                        args_schema=tool.input_schema, handle_tool_error=True)


def bastion_tools(session: Session, names: set[str] | None = None) -> list[StructuredTool]:
    """Every tool the gateway offers this agent (or those in `names`, canonical names) as LangChain tools."""
    return [bastion_tool(session, tool) for tool in session.client.tools() if names is None or tool.name in names]
