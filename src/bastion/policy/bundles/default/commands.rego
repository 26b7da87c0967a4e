# Commands and code that no role may run, whatever the grant: the deny rules of
# data.bastion.config.commands, matched against the arguments each tool executes.
package bastion.authz

import rego.v1

commands := config.commands

deny contains msg if {
	some field in commands.fields[input.tool.name]
	value := input.args[field]
	not is_string(value)
	msg := concat("", [field, " must be a string, got ", json.marshal(value)])
}

deny contains msg if {
	some field in commands.fields[input.tool.name]
	text := input.args[field]
	is_string(text)
	count(text) > commands.max_chars
	msg := concat("", [
		field, " is too long for the policy to check (", format_int(count(text), 10),
		" characters, limit ", format_int(commands.max_chars, 10), ")",
	])
}

# The executed arguments short enough to check, by field.
checked_text[field] := text if {
	some field in commands.fields[input.tool.name]
	text := input.args[field]
	is_string(text)
	count(text) <= commands.max_chars
}

deny contains msg if {
	some field, text in checked_text
	some rule in commands.deny
	some needle in rule.needles
	contains(text, needle)
	every pattern in rule.patterns {
		regex.match(pattern, text)
	}
	msg := concat("", [field, " matches deny rule ", json.marshal(rule.label)])
}
