# Which roles may call which tools, and the limits each role carries (data.bastion.config.roles).
package bastion.authz

import rego.v1

granting_roles contains role if {
	some role in input.principal.roles
	input.tool.name in config.roles[role].tools
}

max_timeout_s := max({config.roles[role].max_timeout_s | some role in granting_roles})

deny contains msg if {
	count(granting_roles) == 0
	msg := concat("", [
		"tool ", json.marshal(input.tool.name),
		" is not granted to roles ", json.marshal(object.get(input.principal, "roles", [])),
	])
}
