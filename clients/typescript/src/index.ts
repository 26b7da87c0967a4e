/**
 * The bastion gateway's TypeScript client: the types of every request and answer come from `schema.d.ts`, which
 * openapi-typescript generates from the gateway's OpenAPI document; this file is the thin fetch wrapper around them.
 */
import type { components, operations, paths } from "./schema.js";

export type { components, operations, paths };
export type Schemas = components["schemas"];
export type Problem = Schemas["Problem"];

type JsonBody<T> = T extends { content: { "application/json": infer Body } } ? Body : never;
type Answer<O extends keyof operations, S extends keyof operations[O]["responses"]> =
  JsonBody<operations[O]["responses"][S]>;
type Request<O extends keyof operations> =
  operations[O] extends { requestBody?: infer B } ? NonNullable<JsonBody<NonNullable<B>>> : never;

export type SessionCreate = Request<"create_session_v1_sessions_post">;
export type Session = Answer<"create_session_v1_sessions_post", 201>;
export type CallRequest = Request<"call_tool_v1_sessions__session_id__calls_post">;
export type CallAnswer = Answer<"call_tool_v1_sessions__session_id__calls_post", 200>;
export type ToolList = Answer<"list_tools_v1_tools_get", 200>;

/** A refusal or error answered by the gateway as RFC 9457 problem details; `kind` is the last part of its type. */
export class BastionError extends Error {
  readonly kind: string;

  constructor(readonly status: number, readonly problem: Problem) {
    super(`${problem.title}: ${problem.detail}`);
    this.name = "BastionError";
    this.kind = problem.type.split("/").pop() ?? "error";
  }

  /** The policy's reasons, for a denied or revoked call. */
  get reasons(): string[] {
    return this.problem.reasons ?? [];
  }
}

export interface ClientOptions {
  /** The gateway's URL (default http://127.0.0.1:8080). */
  baseUrl?: string;
  /** The agent's (or, for admin routes, the admin's) API key. */
  apiKey: string;
  /** A fetch implementation (default the global one). */
  fetch?: typeof fetch;
}

/** One gateway, one key: sessions, tool calls and the tool listing, plus `request` for every other route. */
export class BastionClient {
  readonly baseUrl: string;
  private readonly apiKey: string;
  private readonly fetchImpl: typeof fetch;

  constructor(options: ClientOptions) {
    this.baseUrl = (options.baseUrl ?? "http://127.0.0.1:8080").replace(/\/+$/, "");
    this.apiKey = options.apiKey;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** Send one request to a route of the OpenAPI document; a problem answer throws a BastionError. */
  async request<T>(method: string, path: keyof paths | string, body?: unknown,
                   headers: Record<string, string> = {}): Promise<T> {
    const response = await this.fetchImpl(this.baseUrl + path, {
      method,
      headers: { Authorization: `Bearer ${this.apiKey}`, Accept: "application/json",
                 ...(body === undefined ? {} : { "Content-Type": "application/json" }), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    const answer: unknown = text ? JSON.parse(text) : undefined;
    if (!response.ok) {
      throw new BastionError(response.status, answer as Problem);
    }
    return answer as T;
  }

  /** Start a session (labels, limits, runtime, the user's task and trusted values are optional). */
  createSession(body: SessionCreate = {}): Promise<Session> {
    return this.request<Session>("POST", "/v1/sessions", body);
  }

  /** End a session and remove its container. */
  async endSession(sessionId: string): Promise<void> {
    await this.request<unknown>("DELETE", `/v1/sessions/${encodeURIComponent(sessionId)}`);
  }

  /** Run one tool call in a session (canonical tool names: `shell.run`); `idempotencyKey` makes a retry safe. */
  call(sessionId: string, tool: string, args: CallRequest["args"] = {}, idempotencyKey?: string): Promise<CallAnswer> {
    return this.request<CallAnswer>("POST", `/v1/sessions/${encodeURIComponent(sessionId)}/calls`,
                                    { tool, args } satisfies CallRequest,
                                    idempotencyKey ? { "Idempotency-Key": idempotencyKey } : {});
  }

  /** The tools the gateway offers. */
  async tools(): Promise<ToolList["tools"]> {
    return (await this.request<ToolList>("GET", "/v1/tools")).tools;
  }
}
