"""Console acts, each performed by the admin API route it names: the same role check, the same validation, the
same audit record under the operator's name. A refusal becomes a page saying what went wrong and what to do."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import ValidationError

from bastion.gateway.api.deps import authorize_admin
from bastion.gateway.api.problems import Problem, as_problem
from bastion.gateway.console.auth import ConsoleRefused, Operator
from bastion.gateway.errors import GatewayError

T = TypeVar("T")


async def perform(operator: Operator, method: str, route_path: str, act: Callable[[], Awaitable[T]]) -> T:
    """Run `act` (a call of the API route `method route_path`) if the operator's role allows that route."""
    try:
        authorize_admin(operator.principal, method, route_path)
        return await act()
    except (Problem, GatewayError) as exc:
        problem = as_problem(exc)
        raise ConsoleRefused(problem.status, problem.title, problem.detail) from exc
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in exc.errors())
        raise ConsoleRefused(422, "Invalid input", f"{details}. Correct the form and send it again.") from exc
