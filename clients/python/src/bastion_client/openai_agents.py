"""bastion's tools as OpenAI Agents SDK function tools (extra `bastion-client[openai-agents]`): each a
`FunctionTool` whose calls run through the gateway in one session of the async client.

A refusal (policy, limits, schema) is returned to the model as the tool's answer, with the policy's reasons,
rather than failing the run.

    from agents import Agent, Runner
    from bastion_client import AsyncBastionClient
    from bastion_client.openai_agents import bastion_function_tools
    async with AsyncBastionClient(url, key) as bastion, await bastion.create_session() as session:
        agent = Agent(name="ops", tools=await bastion_function_tools(session))
        await Runner.run(agent, "What is in my workspace?")
"""

import json
from typing import Any

from agents import FunctionTool
from agents.tool_context import ToolContext

from bastion_client.aio import AsyncSession
from bastion_client.answers import answer_text
from bastion_client.errors import BastionError
from bastion_client.function_names import function_name
from bastion_client.models import ToolInfo


def bastion_function_tool(session: AsyncSession, tool: ToolInfo) -> FunctionTool:
    """One bastion tool as a function tool bound to `session`, named by `function_name` (`fs.read` is `fs__read`).
    Its schema is the tool's own JSON Schema, so it is not strict (optional properties stay optional)."""

    async def invoke(_context: ToolContext[Any], arguments: str) -> str:
        try:
            args = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            return f"The arguments are not JSON ({exc}); send a JSON object matching the tool's schema."
        try:
            return answer_text(await session.call(tool.name, args))
        except BastionError as exc:
            return str(exc)

    return FunctionTool(name=function_name(tool.name), description=tool.description,
                        params_json_schema=tool.input_schema, on_invoke_tool=invoke, strict_json_schema=False)


async def bastion_function_tools(session: AsyncSession, names: set[str] | None = None) -> list[FunctionTool]:
    """Every tool the gateway offers this agent (or those in `names`, canonical names) as function tools."""
    return [bastion_function_tool(session, tool) for tool in await session.client.tools()
            if names is None or tool.name in names]
