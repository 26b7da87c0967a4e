# Rate limits per agent and per (agent, tool): the gateway passes the number of calls it allowed in
# the last 60 seconds as input.context.rates; a call at or over the limit is refused.
package bastion.authz

import rego.v1

rates := input.context.rates

deny contains msg if {
	limit := config.rate_limits.agent_per_minute
	rates.agent_calls_1m >= limit
	msg := concat("", [
		"rate limit: this agent made ", format_int(rates.agent_calls_1m, 10),
		" calls in the last minute (limit ", format_int(limit, 10), ")",
	])
}

deny contains msg if {
	limit := config.rate_limits.tool_per_minute[input.tool.name]
	rates.tool_calls_1m >= limit
	msg := concat("", [
		"rate limit: this agent called ", json.marshal(input.tool.name), " ", format_int(rates.tool_calls_1m, 10),
		" times in the last minute (limit ", format_int(limit, 10), ")",
	])
}
