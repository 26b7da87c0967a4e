# Risk gating on the detector's score for the session (input.context.risk): at or above
# data.bastion.config.risk.max_score[tool risk] the call is refused; at or above approval_score it
# needs a human's approval first.
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

approval_reasons contains msg if {
	limit := config.risk.approval_score[input.tool.risk]
	input.context.risk >= limit
	msg := concat("", [
		"risk score ", sprintf("%v", [input.context.risk]), " is at or above ", sprintf("%v", [limit]),
		" for ", input.tool.risk, "-risk tools",
	])
}
