# File tools may only touch the session workspace: relative paths (resolved under the workspace)
# or absolute paths inside it, never a ".." segment or a NUL character.
package bastion.authz

import rego.v1

workspace := config.workspace

path_tool if input.tool.name in workspace.path_tools

has_path if _ = input.args.path

deny contains msg if {
	path_tool
	not has_path
	not input.tool.name in workspace.path_optional
	msg := concat("", ["tool ", json.marshal(input.tool.name), " needs a \"path\" argument"])
}

deny contains msg if {
	path_tool
	has_path
	not is_string(input.args.path)
	msg := concat("", ["path must be a string, got ", json.marshal(input.args.path)])
}

deny contains msg if {
	path_tool
	path := input.args.path
	is_string(path)
	contains(path, "\u0000")
	msg := concat("", ["path ", json.marshal(path), " contains a NUL character"])
}

deny contains msg if {
	path_tool
	path := input.args.path
	is_string(path)
	".." in split(path, "/")
	msg := concat("", ["path ", json.marshal(path), " has a \"..\" segment; paths must stay inside ", workspace.root])
}

deny contains msg if {
	path_tool
	path := input.args.path
	is_string(path)
	startswith(path, "/")
	not inside_workspace(path)
	msg := concat("", ["path ", json.marshal(path), " is outside ", workspace.root])
}

inside_workspace(path) if path == workspace.root

inside_workspace(path) if startswith(path, concat("", [workspace.root, "/"]))
