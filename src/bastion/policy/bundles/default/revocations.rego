# Revocations are data (data.bastion.revocations), written by the gateway when an agent, a session
# or one agent's tool is cut off: the next call is denied with the reason "revoked".
package bastion.authz

import rego.v1

revoked contains detail if {
	entry := data.bastion.revocations.agents[input.principal.id]
	detail := with_reason(concat("", ["agent ", json.marshal(input.principal.id), " is revoked"]), entry)
}

revoked contains detail if {
	entry := data.bastion.revocations.sessions[input.session.id]
	detail := with_reason(concat("", ["session ", json.marshal(input.session.id), " is revoked"]), entry)
}

revoked contains detail if {
	entry := data.bastion.revocations.tools[input.principal.id][input.tool.name]
	detail := with_reason(
		concat("", ["tool ", json.marshal(input.tool.name), " is revoked for agent ", json.marshal(input.principal.id)]),
		entry,
	)
}

# An entry without a reason string still revokes (OPA: `not is_string(entry.reason)` is undefined, not true, when
# the entry has no reason, so the fallback is an `else`).
with_reason(text, entry) := concat(": ", [text, entry.reason]) if is_string(entry.reason) else := text
