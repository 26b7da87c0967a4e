# Flow rules over the session's earlier calls (input.session.history, the last 20, oldest first):
# once a session has read a file under a secret directory, it may not use a network-capable tool
# nor run a command or code that can send data out. The history is only scanned for a call that
# could send data out.
package bastion.authz

import rego.v1

flow := config.flow

deny contains msg if {
	input.tool.network
	secret_read_in(input.session.history, input.tool.name)
	msg := concat("", [
		"tool ", json.marshal(input.tool.name),
		" can reach the network and this session has read a file under a secret directory",
	])
}

# The argument fields of this call that could send data out (no history needed to know that).
outbound_fields contains field if {
	some field in object.get(flow.egress_fields, input.tool.name, [])
	text := input.args[field]
	is_string(text)
	count(text) <= commands.max_chars
	some pattern in flow.egress_patterns[input.tool.name]
	regex.match(pattern, text)
}

# The field is passed to secret_read_in only to tie the history scan to a matched field: rego-cpp runs a
# call whose arguments are all known up front even when the statements before it fail.
deny contains msg if {
	some field in outbound_fields
	secret_read_in(input.session.history, field)
	msg := concat("", [
		field, " can send data out of the sandbox and this session has read a file under a secret directory",
	])
}

secret_read_in(history, _) if {
	some entry in history
	entry.allow
	touched_secret(entry)
}

touched_secret(entry) if {
	entry.tool in flow.read_tools
	in_secret_dir(entry.args.path)
}

touched_secret(entry) if {
	some pattern in object.get(flow.secret_read_patterns, entry.tool, [])
	regex.match(pattern, entry.args.command)
}

# Some path segment is a secret directory: "secrets/key", "/workspace/secrets/key", "a/secrets".
in_secret_dir(path) if {
	some dir in flow.secret_dirs
	contains(concat("", ["/", path, "/"]), concat("", ["/", dir, "/"]))
}
