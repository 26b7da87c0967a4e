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

# rego-cpp compiles a regex on every call and evaluates a rule body's statements eagerly, so one
# pass of needles_pattern finds the needles present, and only the rules holding one of them run
# their patterns, inside a function that is called only when some needle was found.
needles_found[field] := found if {
	some field in commands.fields[input.tool.name]
	text := input.args[field]
	is_string(text)
	count(text) <= commands.max_chars
	found := {needle | some needle in regex.find_n(commands.needles_pattern, text, -1)}
	count(found) > 0
}

deny contains msg if {
	some field, found in needles_found
	some label in denied_labels(input.args[field], found)
	msg := concat("", [field, " matches deny rule ", json.marshal(label)])
}

denied_labels(text, found) := {rule.label |
	some rule in commands.deny
	triggered(rule, found)
	every pattern in rule.patterns {
		regex.match(pattern, text)
	}
}

triggered(rule, found) if {
	some needle in rule.needles
	found[needle]
}
