# Risk gating: when the detector's score for the session reaches the limit set for a tool's risk
# level (data.bastion.config.risk.max_score), tools of that level are refused.
package bastion.authz

import rego.v1

deny contains msg if {
	limit := config.risk.max_score[input.tool.risk]
	input.context.risk >= limit
	msg := concat("", [
		"risk too high for tool ", json.marshal(input.tool.name), ": risk score ", sprintf("%v", [input.context.risk]),
		" is at or above ", sprintf("%v", [limit]), " for ", input.tool.risk, "-risk tools",
	])
}
