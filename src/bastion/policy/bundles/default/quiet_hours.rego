# Quiet hours: during the listed UTC hours, the listed tools are refused unless a role of the
# caller is exempt (for example an on-call role).
package bastion.authz

import rego.v1

quiet := config.quiet_hours

deny contains msg if {
	count(quiet.hours_utc) > 0
	input.tool.name in quiet.tools
	not quiet_exempt
	hour := utc_hour(input.context.time)
	hour in quiet.hours_utc
	msg := concat("", [
		"tool ", json.marshal(input.tool.name), " is not allowed during quiet hours (",
		format_int(hour, 10), ":00 UTC)",
	])
}

quiet_exempt if {
	some role in input.principal.roles
	role in quiet.exempt_roles
}

# rego-cpp parses RFC 3339 offsets but not the "Z" suffix, so "Z" is written as "+00:00" first; time.clock
# of bare nanoseconds is UTC (its time-zone form corrupts the heap of a process that also loaded torch).
utc_hour(text) := hour if {
	[hour, _, _] := time.clock(time.parse_rfc3339_ns(regex.replace(text, `[Zz]$`, "+00:00")))
}
