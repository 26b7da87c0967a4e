// Smoke test of the built client (dist/) against a live gateway named by BASTION_URL, with a developer agent's key
// in BASTION_API_KEY; tests/client/test_typescript_client.py starts the gateway and runs it.
import assert from "node:assert/strict";
import { test } from "node:test";

import { BastionClient, BastionError } from "../dist/index.js";

const baseUrl = process.env.BASTION_URL;
const apiKey = process.env.BASTION_API_KEY;
const skip = baseUrl && apiKey ? false : "BASTION_URL and BASTION_API_KEY name no gateway";

test("lists tools, runs a call in a session, and reads a refusal", { skip }, async () => {
  const client = new BastionClient({ baseUrl, apiKey });
  const tools = await client.tools();
  assert.ok(tools.some((tool) => tool.name === "shell.run"));
  const session = await client.createSession({ labels: { client: "typescript" } });
  try {
    const ran = await client.call(session.session_id, "shell.run", { command: "echo hello from node" });
    assert.equal(ran.result.exit_code, 0);
    assert.equal(ran.result.stdout, "hello from node\n");
    assert.equal(ran.decision.allow, true);
    const refused = await client.call(session.session_id, "shell.run", { command: "cat /etc/shadow" })
      .then(() => undefined, (error) => error);
    assert.ok(refused instanceof BastionError);
    assert.equal(refused.status, 403);
    assert.equal(refused.kind, "denied");
    assert.ok(refused.reasons.length > 0);
    assert.match(refused.problem.call_id ?? "", /^call_/);
  } finally {
    await client.endSession(session.session_id);
  }
  const gone = await client.call(session.session_id, "fs.list", {}).then(() => undefined, (error) => error);
  assert.ok(gone instanceof BastionError && gone.status >= 400);
});
