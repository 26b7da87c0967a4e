# The one document bastion asks for: data.bastion.authz.decision = {allow, reasons, obligations}.
# Every concern adds its refusals to `deny`; a call is allowed only when some role grants the tool
# and nothing denies it. Reasons are built with concat(), never sprintf("%s"): rego-cpp's sprintf
# re-quotes strings that other built-ins computed.
package bastion.authz

import rego.v1

config := data.bastion.config

decision := {
	"allow": allow,
	"reasons": reasons,
	"obligations": obligations,
}

default allow := false

allow if {
	count(reasons) == 0
	count(granting_roles) > 0
}

# "revoked" always comes first (a contract callers rely on); the other reasons follow sorted.
reasons := array.concat(revocation_reasons, sorted(deny))

default revocation_reasons := []

revocation_reasons := array.concat(["revoked"], sorted(revoked)) if count(revoked) > 0

# rego-cpp's sort() of a set answers a set; sorting an array answers an array.
sorted(items) := sort([item | some item in items])

# What an allowed call must run under (policy/obligations.py documents each key). Approval is only
# asked for when nothing else denies the call.
default obligations := {}

obligations := object.union_n([
	{
		"max_timeout_s": max_timeout_s,
		"runtime": runtime,
		"limits": limits,
		"egress": {"allow": egress_allow},
		"redact": sorted(redact_fields),
	},
	approval_obligation,
]) if allow

# Read as a path, not object.get(input, ...): bastion sends rego-cpp only the parts of input a bundle names.
default input_version := null

input_version := input.version

deny contains msg if {
	input_version != config.input_version
	msg := concat("", [
		"input version ", json.marshal(input_version),
		" is not supported (expected ", format_int(config.input_version, 10), ")",
	])
}
