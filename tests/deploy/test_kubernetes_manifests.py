"""The Kubernetes manifests under deploy/kubernetes/ hold together: every object is namespaced and labelled, the
settings they pass exist, what they reference is defined, services select pods, gateways keep stable names and are
probed on the routes the gateway serves, and no container but the gateway gets the Docker socket."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from bastion.gateway.cli.app import app
from bastion.gateway.settings import Settings

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
WORKLOADS = {"Deployment", "StatefulSet", "Job", "DaemonSet"}


def _documents() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        documents += [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents


DOCUMENTS = _documents()


def _named(kind: str) -> dict[str, dict[str, Any]]:
    return {document["metadata"]["name"]: document for document in DOCUMENTS if document["kind"] == kind}


def _pod_specs() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(document, document["spec"]["template"]) for document in DOCUMENTS if document["kind"] in WORKLOADS]


def _containers() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    return [(document, template, container) for document, template in _pod_specs()
            for container in template["spec"]["containers"]]


def test_every_object_is_namespaced_and_labelled() -> None:
    assert DOCUMENTS
    for document in DOCUMENTS:
        assert {"apiVersion", "kind", "metadata"} <= document.keys(), document
        assert document["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bastion", document["metadata"]
        if document["kind"] != "Namespace":
            assert document["metadata"]["namespace"] == "bastion", document["metadata"]


def test_the_settings_passed_are_settings_the_gateway_reads() -> None:
    known = {f"BASTION_{name.upper()}" for name in Settings.model_fields}
    passed = set()
    for config in [*_named("ConfigMap").values(), *_named("Secret").values()]:
        passed |= set(config.get("data", {})) | set(config.get("stringData", {}))
    for _, _, container in _containers():
        passed |= {variable["name"] for variable in container.get("env", [])}
    bastion = {name for name in passed if name.startswith("BASTION_")}
    assert bastion and bastion <= known, sorted(bastion - known)
    assert all(name.startswith(("BASTION_", "OTEL_")) for name in passed), sorted(passed)


def test_secrets_stay_out_of_config_maps_and_hold_no_real_values() -> None:
    secret_names = {"BASTION_DATABASE_URL", "BASTION_ADMIN_KEY", "BASTION_AUDIT_SIGNING_KEY", "BASTION_REDACTION_KEY"}
    for config in _named("ConfigMap").values():
        assert not secret_names & set(config["data"]), config["metadata"]["name"]
    for secret in _named("Secret").values():
        assert secret_names <= set(secret["stringData"])
        assert all("CHANGE-ME" in value for value in secret["stringData"].values())


def test_what_workloads_reference_is_defined() -> None:
    config_maps, secrets = set(_named("ConfigMap")), set(_named("Secret"))
    for _, _, container in _containers():
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets
    for _, template, container in _containers():
        volumes = {volume["name"] for volume in template["spec"].get("volumes", [])}
        document_claims = set()
        for document, _ in _pod_specs():
            document_claims |= {claim["metadata"]["name"] for claim in document["spec"].get("volumeClaimTemplates", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes | document_claims, mount


def test_services_select_pods_and_name_their_ports() -> None:
    templates = [template for _, template in _pod_specs()]
    for service in _named("Service").values():
        selector = service["spec"]["selector"]
        matching = [template for template in templates
                    if selector.items() <= template["metadata"]["labels"].items()]
        assert matching, service["metadata"]["name"]
        ports = {port["name"] for template in matching for container in template["spec"]["containers"]
                 for port in container.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for document, template in _pod_specs():
        selector = document["spec"].get("selector", {}).get("matchLabels")
        if selector is not None:
            assert selector.items() <= template["metadata"]["labels"].items(), document["metadata"]["name"]
        if document["kind"] == "StatefulSet":
            assert document["spec"]["serviceName"] in _named("Service")


def test_gateways_keep_their_names_and_are_probed_on_the_gateways_routes() -> None:
    gateway = _named("StatefulSet")["bastion-gateway"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["bastion", "serve"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["BASTION_GATEWAY_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    annotations = gateway["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    config = _named("ConfigMap")["bastion-gateway"]["data"]
    assert config["BASTION_REDIS_URL"].startswith("redis://bastion-redis.")
    assert Settings.model_fields["redis_url"]


@pytest.mark.parametrize("field", ["resources", "securityContext"])
def test_every_container_is_bounded_and_locked_down(field: str) -> None:
    for document, _, container in _containers():
        assert field in container, (document["metadata"]["name"], container["name"])
    for _, _, container in _containers():
        assert {"requests", "limits"} <= container["resources"].keys()
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert ":" in container["image"] and not container["image"].endswith(":latest")


def test_only_the_gateway_gets_the_docker_socket() -> None:
    for document, template, container in _containers():
        sockets = {volume["name"] for volume in template["spec"].get("volumes", [])
                   if volume.get("hostPath", {}).get("path") == "/var/run/docker.sock"}
        mounted = {mount["name"] for mount in container.get("volumeMounts", [])} & sockets
        if mounted:
            assert (document["metadata"]["name"], container["name"]) == ("bastion-gateway", "gateway")


def test_the_commands_the_manifests_run_exist() -> None:
    commands = set(get_command(app).commands)  # type: ignore[attr-defined]
    for _, _, container in _containers():
        program, *arguments = container["command"]
        if program == "bastion":
            assert arguments[0] in commands, container["command"]
