"""The Helm chart and kustomize overlays, checked offline: Helm's own engine (helm-python-sdk)
renders and lints, every object is validated against the Kubernetes schemas, and the properties
ops rely on are asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "k8s" / "helm" / "llmgw"
K8S_VERSION = "1.30.0"
COMPONENTS = ("ingress", "limiter", "cache", "router", "drift")
CRDS = {"ServiceMonitor"}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    out = helm.Chart.load(str(CHART)).render(values, name="llmgw", namespace="llmgw", is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def kustomize(overlay: str) -> list[dict[str, Any]]:
    text = subprocess.run(["kubectl", "kustomize", str(REPO / "deploy/k8s/manifests/overlays" / overlay)],
                          check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(text) if d]


def validate_all(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRDS:
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


EVERYTHING_ON = {
    "networkPolicy": {"enabled": True, "ingressFromNamespaces": {"team": "apps"}},
    "serviceMonitor": {"enabled": True},
    "redis": {"url": "rediss://redis:6380/0", "passwordSecret": "redis-auth"},
    "kafka": {"bootstrap": "kafka:9093", "securityProtocol": "SASL_SSL", "saslSecret": "kafka-user",
              "topics": {"partitions": 12, "replicationFactor": 3, "retentionMs": 86400000}},
}


class TestHelmChart:
    def test_lint_is_clean(self) -> None:
        report = helm.lint(str(CHART), strict=True)
        assert report["errors"] == []
        assert [m for m in report["messages"] if m["severity"] >= 2] == []

    @pytest.mark.parametrize("values", [None, EVERYTHING_ON, {"drift": {"enabled": False}},
                                        {**EVERYTHING_ON, "ingress": {"colocate": True}}])
    def test_every_rendered_object_is_valid_kubernetes(self, values: dict[str, Any] | None) -> None:
        validate_all(render(values))

    def test_schema_rejects_bad_values_naming_the_key(self) -> None:
        chart = helm.Chart.load(str(CHART))
        for bad, key in [({"ingress": {"replicas": "two"}}, "/ingress/replicas"),
                         ({"redis": {"url": "http://x"}}, "/redis/url"),
                         ({"typo": 1}, "typo")]:
            with pytest.raises(helm.HelmValuesError, match=re.escape(key)):
                chart.validate_schema(bad)

    def test_one_deployment_per_service_with_probes_security_and_resources(self) -> None:
        deployments = of_kind(render(), "Deployment")
        assert set(deployments) == {f"llmgw-{c}" for c in COMPONENTS}
        for name, d in deployments.items():
            pod = d["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["terminationGracePeriodSeconds"] >= 20
            (c,) = pod["containers"]
            assert "grpc" in c["readinessProbe"] and "grpc" in c["livenessProbe"], name
            assert c["livenessProbe"]["grpc"]["service"] == "liveness"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
            assert re.fullmatch(r"llmgw/llmgw-\w+:\d+\.\d+\.\d+", c["image"]), "images carry a version tag"

    def test_hpas_for_ingress_and_router_and_a_pdb_per_service(self) -> None:
        docs = render()
        assert set(of_kind(docs, "HorizontalPodAutoscaler")) == {"llmgw-ingress", "llmgw-router"}
        assert set(of_kind(docs, "PodDisruptionBudget")) == {f"llmgw-{c}" for c in COMPONENTS}
        # An autoscaled Deployment leaves replicas to the HPA.
        assert "replicas" not in of_kind(docs, "Deployment")["llmgw-ingress"]["spec"]

    def test_secrets_only_by_reference_never_in_configmaps(self) -> None:
        docs = render(EVERYTHING_ON)
        for cm in of_kind(docs, "ConfigMap").values():
            blob = json.dumps(cm["data"])
            assert not re.search(r"sk-[A-Za-z0-9]{8}|api_key:\s*\S|password:\s*\S", blob), cm["metadata"]["name"]
        secret_vars = {"API_KEYS", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "REDIS_PASSWORD", "KAFKA_SASL_PASSWORD"}
        for d in of_kind(docs, "Deployment").values():
            for env in d["spec"]["template"]["spec"]["containers"][0]["env"]:
                if env["name"] in secret_vars:
                    assert "value" not in env and "secretKeyRef" in env["valueFrom"], env["name"]
        assert not of_kind(docs, "Secret"), "the chart reads an existing Secret; it never creates one"

    def test_topics_job_is_a_pre_install_hook(self) -> None:
        job = of_kind(render(EVERYTHING_ON), "Job")["llmgw-topics"]
        assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
        cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
        assert cmd[:3] == ["llmgw", "topics", "create"] and "12" in cmd

    def test_optional_network_policies_and_service_monitor(self) -> None:
        assert not of_kind(render(), "NetworkPolicy")
        docs = render(EVERYTHING_ON)
        assert set(of_kind(docs, "NetworkPolicy")) == {f"llmgw-{c}" for c in ("ingress", "limiter", "cache", "router")}
        assert of_kind(docs, "ServiceMonitor")

    def test_a_colocated_ingress_gets_the_limiter_rules_and_redis_under_prefixes(self) -> None:
        plain = of_kind(render(), "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]
        assert "COLOCATE" not in {e["name"] for e in plain["containers"][0]["env"]}
        pod = of_kind(render({"ingress": {"colocate": True}, "redis": {"passwordSecret": "redis-auth"}}),
                      "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["COLOCATE"]["value"] == "limiter,cache"
        assert env["LIMITER_LIMITS_FILE"]["value"] == "/etc/llmgw/config/limits.yaml"
        assert env["LIMITER_REDIS_URL"]["value"] == env["CACHE_REDIS_URL"]["value"] == "redis://redis-master:6379/0"
        for var in ("LIMITER_REDIS_PASSWORD", "CACHE_REDIS_PASSWORD"):
            assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
        assert {"name": "config", "mountPath": "/etc/llmgw/config", "readOnly": True} in c["volumeMounts"]
        assert any(v["name"] == "config" for v in pod["volumes"])
        # Redis out: each replica admits limit / LIMITER_REPLICAS; under the HPA that is its most.
        assert env["LIMITER_REPLICAS"]["value"] == "10"
        fixed = of_kind(render({"ingress": {"colocate": True, "replicas": 3, "hpa": {"enabled": False}}}),
                        "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {e["name"]: e.get("value") for e in fixed}["LIMITER_REPLICAS"] == "3"

    def test_an_ingress_carrying_the_router_core_gets_its_routes_prompts_and_provider_keys(self) -> None:
        for values, cores in (({"colocateRouter": True}, "router"),
                              ({"colocate": True, "colocateRouter": True}, "limiter,cache,router")):
            pod = of_kind(render({"ingress": values, "existingSecret": "llm-keys"}),
                          "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]
            env = {e["name"]: e for e in pod["containers"][0]["env"]}
            assert env["COLOCATE"]["value"] == cores
            assert env["ROUTER_ROUTES_FILE"]["value"] == "/etc/llmgw/config/routes.yaml"
            assert env["ROUTER_PROMPTS_DIR"]["value"] == "/etc/llmgw/prompts"
            for key in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
                assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "llm-keys", "key": key, "optional": True}
            assert ("LIMITER_LIMITS_FILE" in env) == ("limiter" in cores)
            validate_all(render({"ingress": values}))

    def test_a_cache_policy_reaches_the_cache_and_a_colocated_ingress(self) -> None:
        plain = of_kind(render(), "Deployment")["llmgw-cache"]["spec"]["template"]["spec"]
        assert "POLICY_FILE" not in {e["name"] for e in plain["containers"][0]["env"]}
        policy = "rules:\n  - match: {prompt: faq}\n    semantic: {enabled: true}\n"
        docs = render({"cache": {"policy": policy}, "ingress": {"colocate": True}})
        validate_all(docs)
        assert of_kind(docs, "ConfigMap")["llmgw-config"]["data"]["cache-policy.yaml"].strip() == policy.strip()
        for name, var in (("llmgw-cache", "POLICY_FILE"), ("llmgw-ingress", "CACHE_POLICY_FILE")):
            pod = of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            assert {e["name"]: e.get("value") for e in c["env"]}[var] == "/etc/llmgw/config/cache-policy.yaml"
            assert {"name": "config", "mountPath": "/etc/llmgw/config", "readOnly": True} in c["volumeMounts"]

    def test_prompts_and_configs_are_mounted_where_services_read_them(self) -> None:
        docs = render()
        prompts = of_kind(docs, "ConfigMap")["llmgw-prompts"]["data"]
        assert "summarize__versions__v1.yaml" in prompts
        router = of_kind(docs, "Deployment")["llmgw-router"]["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in router["containers"][0]["env"]}
        assert env["PROMPTS_DIR"] == "/etc/llmgw/prompts" and env["ROUTES_FILE"] == "/etc/llmgw/config/routes.yaml"
        items = next(v for v in router["volumes"] if v["name"] == "prompts")["configMap"]["items"]
        assert {"key": "summarize__versions__v1.yaml", "path": "summarize/versions/v1.yaml"} in items


class TestKustomize:
    @pytest.mark.parametrize("overlay", ["dev", "prod"])
    def test_overlays_render_and_validate(self, overlay: str) -> None:
        docs = kustomize(overlay)
        validate_all(docs)
        assert {d["metadata"]["namespace"] for d in docs} == {"llmgw-dev" if overlay == "dev" else "llmgw"}

    def test_dev_is_small_and_prod_is_pinned(self) -> None:
        dev = of_kind(kustomize("dev"), "Deployment")
        assert dev["llmgw-cache"]["spec"]["replicas"] == 1
        env = {e["name"]: e.get("value") for e in dev["llmgw-cache"]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LOG_LEVEL"] == "debug"
        prod = of_kind(kustomize("prod"), "Deployment")
        assert prod["llmgw-limiter"]["spec"]["replicas"] == 3
        for docs, n in ((dev, "1"), (prod, "3")):
            env = {e["name"]: e.get("value") for e in docs["llmgw-limiter"]["spec"]["template"]["spec"]["containers"][0]["env"]}
            assert env["REPLICAS"] == n, "the limiter's local fallback must know its replica count"
        assert all(d["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":0.1.0") for d in prod.values())

    def test_rendered_manifests_and_chart_files_are_in_sync(self) -> None:
        proc = subprocess.run([sys.executable, str(REPO / "deploy/k8s/render.py"), "--check"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dashboard_uses_only_metrics_the_code_exports() -> None:
    dash = json.loads((REPO / "deploy/k8s/grafana/llmgw-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {m.removesuffix("_bucket") for e in exprs for m in re.findall(r"\b(llmgw_[a-z_]+)", e)}
    source = "\n".join(p.read_text() for p in [*(REPO / "src").rglob("*.py"), *(REPO / "services").rglob("*.py")])
    for name in names:
        base = name.removesuffix("_total")
        assert f'"{name}"' in source or f'"{base}_total"' in source or f'"{base}"' in source, name


def test_the_ingress_serves_its_http_face_and_keeps_its_spool_inside_its_volume() -> None:
    docs = render()
    (c,) = of_kind(docs, "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]["containers"]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in c["ports"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["HTTP_HOST"] == "0.0.0.0" and env["HTTP_PORT"] == "8080"
    assert env["ROUTES_FILE"] == "/etc/llmgw/config/routes.yaml"
    tmp = next(v for v in of_kind(docs, "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]["volumes"]
               if v["name"] == "tmp")
    assert tmp["emptyDir"]["sizeLimit"] == "256Mi"
    assert int(env["SPOOL_MAX_BYTES"]) + 32 * 1024 * 1024 <= 256 * 1024 * 1024  # room left in /tmp
    service = of_kind(docs, "Service")["llmgw-ingress"]
    assert any(p["name"] == "http" and p["port"] == 8080 for p in service["spec"]["ports"])
    off = of_kind(render({"ingress": {"httpPort": -1}}), "Deployment")["llmgw-ingress"]
    assert all(p["name"] != "http" for p in off["spec"]["template"]["spec"]["containers"][0]["ports"])


def test_tracing_points_every_service_at_the_collector_only_when_asked() -> None:
    def envs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {name: {e["name"]: e.get("value") for e in d["spec"]["template"]["spec"]["containers"][0]["env"]}
                for name, d in of_kind(docs, "Deployment").items()}

    assert all("OTEL_EXPORTER_OTLP_ENDPOINT" not in env for env in envs(render()).values())
    on = envs(render({"tracing": {"endpoint": "http://otel-collector.observability:4318", "samplerArg": "0.1"}}))
    assert {"llmgw-ingress", "llmgw-limiter", "llmgw-cache", "llmgw-router"} <= set(on)
    for name in ("llmgw-ingress", "llmgw-limiter", "llmgw-cache", "llmgw-router"):
        env = on[name]
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318", name
        assert (env["OTEL_TRACES_SAMPLER"], env["OTEL_TRACES_SAMPLER_ARG"]) == ("parentbased_traceidratio", "0.1")
    with pytest.raises(Exception, match=r"samplerArg|does not match"):
        render({"tracing": {"endpoint": "http://c:4318", "samplerArg": "2"}})


def test_the_ingress_follows_the_key_store_and_an_optional_key_file() -> None:
    pod = of_kind(render({"redis": {"passwordSecret": "redis-auth"}}), "Deployment")["llmgw-ingress"]["spec"][
        "template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["KEYS_REDIS_URL"]["value"] == "redis://redis-master:6379/0"
    assert env["KEYS_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "redis-auth"
    assert (env["KEYS_PREFIX"]["value"], env["SPEND_PREFIX"]["value"]) == ("llmgw:keys", "llmgw:spend")
    assert float(env["KEYS_POLL_S"]["value"]) <= 2  # a revocation is seen within 2 s
    assert "KEYS_FILE" not in env
    # The limiter follows the store too (keys' own rate limits), and so does a colocated core.
    limiter = {e["name"]: e.get("value") for e in of_kind(render(), "Deployment")["llmgw-limiter"]["spec"][
        "template"]["spec"]["containers"][0]["env"]}
    assert limiter["KEYS_REDIS_URL"] == "redis://redis-master:6379/0" and limiter["KEYS_PREFIX"] == "llmgw:keys"
    colocated = {e["name"]: e.get("value") for e in of_kind(render({"ingress": {"colocate": True}}), "Deployment")[
        "llmgw-ingress"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert colocated["LIMITER_KEYS_REDIS_URL"] == colocated["KEYS_REDIS_URL"]
    filed = of_kind(render({"ingress": {"keys": {"store": False, "prefix": "k", "spendPrefix": "s", "pollSeconds": 1,
                                                 "fileConfigMap": "team-keys"}}}), "Deployment")["llmgw-ingress"]
    spec = filed["spec"]["template"]["spec"]
    env2 = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert "KEYS_REDIS_URL" not in env2 and env2["KEYS_FILE"] == "/etc/llmgw/keys/keys.yaml"
    assert {"name": "keys", "mountPath": "/etc/llmgw/keys", "readOnly": True} in spec["containers"][0]["volumeMounts"]
    assert {"name": "keys", "configMap": {"name": "team-keys"}} in spec["volumes"]
    with pytest.raises(Exception, match=r"pollSeconds|maximum"):
        render({"ingress": {"keys": {"store": True, "prefix": "k", "spendPrefix": "s", "pollSeconds": 30,
                                     "fileConfigMap": ""}}})


def test_the_chart_refuses_a_spool_that_does_not_fit_its_volume() -> None:
    bigger = render({"ingress": {"tmpMiB": 1024, "spool": {"maxMiB": 900}}})
    ingress = of_kind(bigger, "Deployment")["llmgw-ingress"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in ingress["containers"][0]["env"]}
    assert env["SPOOL_MAX_BYTES"] == str(900 * 1024 * 1024)
    assert next(v for v in ingress["volumes"] if v["name"] == "tmp")["emptyDir"]["sizeLimit"] == "1024Mi"
    with pytest.raises(Exception, match=r"ingress\.spool\.maxMiB \(240\) must leave at least 32 MiB of ingress\.tmpMiB"):
        render({"ingress": {"spool": {"maxMiB": 240}}})


def test_the_drift_pod_reaches_a_secured_kafka_keeps_its_data_on_its_volume_and_scales_by_segment() -> None:
    docs = render({**EVERYTHING_ON, "drift": {"replicas": 3, "segmentBy": "tenant,prompt"}})
    deployments = of_kind(docs, "Deployment")
    drift = deployments["llmgw-drift"]["spec"]["template"]["spec"]
    (c,) = drift["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert "secretKeyRef" in env["KAFKA_SASL_PASSWORD"]["valueFrom"] and "KAFKA_SASL_USERNAME" in env
    assert env["SEGMENT_BY"]["value"] == "tenant,prompt"
    # Faust's data and the model cache under the writable /tmp volume (the root filesystem is read-only).
    assert "DATA_DIR" not in env or env["DATA_DIR"]["value"].startswith("/tmp/")
    assert env["HOME"]["value"] == "/tmp" and {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert deployments["llmgw-drift"]["spec"]["replicas"] == 3
    # The ingress keys llm.requests by the same fields: one segment, one partition, one drift replica.
    ingress = {e["name"]: e.get("value") for e in
               deployments["llmgw-ingress"]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert ingress["REQUEST_EVENTS_KEY_BY"] == "tenant,prompt"


@pytest.mark.parametrize("url", ["redis+cluster://redis-0:6379,redis-1:6379", "rediss+sentinel://s:26379/primary/0"])
def test_a_redis_cluster_or_sentinel_url_is_accepted_and_reaches_every_service(url: str) -> None:
    docs = render({"redis": {"url": url}})
    for name in ("llmgw-limiter", "llmgw-cache", "llmgw-drift"):
        env = {e["name"]: e.get("value") for e in
               of_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert url in env.values(), name
