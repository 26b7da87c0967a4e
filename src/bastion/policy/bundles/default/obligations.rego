# The obligations an allowed call carries: sandbox runtime tier and limits, the egress allowlist of
# the granting roles, argument fields the audit log must redact, and human approval.
package bastion.authz

import rego.v1

default runtime := "runc"

runtime := config.runtime.by_risk[input.tool.risk]

runtime := config.runtime.default if not config.runtime.by_risk[input.tool.risk]

default limits := {}

limits := object.union(config.limits.default, object.get(config.limits.by_tool, input.tool.name, {}))

# Destinations any granting role may reach (the egress proxy enforces this list).
egress_allow := sort({host |
	some role in granting_roles
	some host in object.get(config.roles[role], "egress", [])
})

redact_fields contains field if {
	some field in object.get(config.redact.tools, input.tool.name, [])
}

# File content written under a secret directory never reaches the audit log in clear.
redact_fields contains "content" if {
	input.tool.name == "fs.write"
	is_string(input.args.path)
	in_secret_dir(input.args.path)
}

default approval_obligation := {}

approval_obligation := {"require_approval": {
	"reason": concat("; ", sorted(approval_reasons)),
	"ttl_s": config.approval.ttl_s,
}} if count(approval_reasons) > 0

# A call needs approval when every role that grants the tool lists it under approval_tools.
approval_reasons contains msg if {
	count(granting_roles) > 0
	every role in granting_roles {
		input.tool.name in object.get(config.roles[role], "approval_tools", [])
	}
	msg := concat("", [
		"tool ", json.marshal(input.tool.name), " needs human approval for roles ",
		json.marshal(sorted(granting_roles)),
	])
}
