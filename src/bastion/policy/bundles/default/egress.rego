# Egress allowlists per role: a destination argument (a URL or a host name) is refused unless some granting
# role lists its host in data.bastion.config.roles[role].egress. Which arguments of which tools are
# destinations is data (data.bastion.config.egress): the built-in tools' `url` and `host`, and the custom
# tools listed under by_tool; the fields of any other tool are not judged by these rules.
package bastion.authz

import rego.v1

default egress_args := {}

egress_args := args if {
	args := config.egress.by_tool[input.tool.name]
} else := config.egress.builtin_args if {
	input.tool.name in config.egress.builtin_tools
}

url_host(url) := lower(parts[1]) if {
	parts := regex.find_all_string_submatch_n(`^[a-zA-Z][a-zA-Z0-9+.-]{0,15}://([^/?#@:]{1,253})`, url, 1)[0]
}

# The host each destination argument of this call names, by argument.
destination_hosts[field] := url_host(value) if {
	some field in object.get(egress_args, "url", [])
	value := input.args[field]
	is_string(value)
}

destination_hosts[field] := lower(value) if {
	some field in object.get(egress_args, "host", [])
	not field in object.get(egress_args, "url", [])
	value := input.args[field]
	is_string(value)
}

deny contains msg if {
	some field in object.get(egress_args, "url", [])
	value := input.args[field]
	is_string(value)
	not url_host(value)
	msg := concat("", [field, " ", json.marshal(value), " is not an absolute URL with a host"])
}

deny contains msg if {
	some host in destination_hosts
	not host in egress_allow
	msg := concat("", [
		"egress to ", json.marshal(host), " is not in the allowlist of roles ",
		json.marshal(sorted(granting_roles)),
	])
}

# A destination written as an IP address inside a refused range (loopback, private, link-local and the
# cloud metadata address, data.bastion.config.egress.refused_cidrs) is denied whatever the allowlists say.
# rego-cpp has no net.cidr_contains: there such a destination is an engine error, so still denied.
deny contains msg if {
	some host in destination_hosts
	regex.match(`^[0-9]{1,3}(?:\.[0-9]{1,3}){3}$|^[0-9a-f]{0,4}(?::[0-9a-f]{0,4}){2,7}$`, host)
	some refused in config.egress.refused_cidrs
	net.cidr_contains(refused.cidr, host)
	msg := concat("", ["egress to ", json.marshal(host), " is refused: it lies in ", refused.cidr, " (", refused.label, ")"])
}
