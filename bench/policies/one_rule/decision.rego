# The smallest useful policy, for measuring the gateway with next to no policy cost: developers may call any tool.
package bastion.authz

import rego.v1

decision := {"allow": "developer" in input.principal.roles, "reasons": reasons, "obligations": {}}

reasons := [] if "developer" in input.principal.roles

reasons := ["only developers may call tools"] if not "developer" in input.principal.roles
