# Egress allowlists per role: a call naming a destination (a "url" or "host" argument) is refused
# unless some granting role lists that host in data.bastion.config.roles[role].egress.
package bastion.authz

import rego.v1

destination_host := lower(parts[1]) if {
	is_string(input.args.url)
	parts := regex.find_all_string_submatch_n(`^[a-zA-Z][a-zA-Z0-9+.-]{0,15}://([^/?#@:]{1,253})`, input.args.url, 1)[0]
} else := lower(input.args.host) if {
	is_string(input.args.host)
}

deny contains msg if {
	is_string(input.args.url)
	not destination_host
	msg := concat("", ["url ", json.marshal(input.args.url), " is not an absolute URL with a host"])
}

deny contains msg if {
	host := destination_host
	not host in egress_allow
	msg := concat("", [
		"egress to ", json.marshal(host), " is not in the allowlist of roles ",
		json.marshal(sorted(granting_roles)),
	])
}
