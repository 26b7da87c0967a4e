"""The HTTP and MCP surfaces: the only room that imports FastAPI, Starlette or MCP."""
