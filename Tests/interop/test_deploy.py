"""docs/deploy/: the compose file and the Kubernetes manifests that docs/deploy.md shows, checked as far as this
machine can without Docker or a cluster:

- docs/deploy.md shows the files exactly as they are in docs/deploy/;
- both YAML files parse (PyYAML), and what they wire together fits: ports, probes, mounts, the user, every
  `${env:...}` of the config supplied by the compose environment or the Secret, the Service's selector;
- `relay check` accepts the configs with those variables;
- with a PostgreSQL server (RELAY_TEST_PG_URL, `make interop` starts one), two relays serve docs/deploy/relay.json5
  on one database (ports and the sink's host changed, nothing else): a webhook through either is delivered, in
  subject order, the readiness probe answers without the token and the admin API with it only.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from conftest import REPO_ROOT, free_port, relay_binary, start_relay, stop_relay

DEPLOY = REPO_ROOT / "docs" / "deploy"
CONFIG = (DEPLOY / "relay.json5").read_text()
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
K8S = [d for d in yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()) if d]


def env_refs(config: str) -> set[str]:
    return set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", config))


def k8s(kind: str) -> dict:
    found = [d for d in K8S if d["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} documents"
    return found[0]


def relay_check(config: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "relay.json5"
    path.write_text(config)
    return subprocess.run([str(relay_binary()), "check", "--config", str(path)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)


def test_deploy_md_shows_the_files_as_they_are():
    doc = (REPO_ROOT / "docs" / "deploy.md").read_text()
    blocks = re.findall(r"```(?:yaml|json5)\n(.*?)```", doc, re.S)
    for name in ("relay.json5", "compose.yaml", "kubernetes.yaml"):
        text = (DEPLOY / name).read_text()
        assert text in blocks, f"docs/deploy.md does not show docs/deploy/{name} as it is"


def test_compose_two_relays_on_postgres(tmp_path):
    services = COMPOSE["services"]
    relays = [n for n, s in services.items() if s.get("image", "").startswith("relay") and "command" not in s]
    assert sorted(relays) == ["relay-a", "relay-b"]
    published = set()
    for name in relays:
        s = services[name]
        assert (DEPLOY / s["build"] / "Dockerfile").is_file()
        mounts = {m.split(":")[1]: m.split(":")[0] for m in s["volumes"]}
        assert (DEPLOY / mounts["/etc/relay/relay.json5"]).resolve() == (DEPLOY / "relay.json5").resolve()
        env = s["environment"]
        assert env_refs(CONFIG) <= set(env), f"{name}: the config needs {env_refs(CONFIG) - set(env)}"
        url = env["RELAY_DATABASE_URL"]
        assert "@postgres:5432/" in url and services["postgres"]["environment"]["POSTGRES_DB"] in url
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert int(s["stop_grace_period"].rstrip("s")) > 10
        for p in s["ports"]:
            host, container = p.rsplit(":", 2)[-2:]
            assert container in ("8080", "9090")
            assert host not in published
            published.add(host)
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    sink = services["sink"]["command"]
    assert sink[:2] == ["simulate", "sink"] and "0.0.0.0:9099" in sink
    assert "http://sink:9099/" in CONFIG
    # relay check, with the environment compose gives the relays (passwords filled in).
    env = {k: re.sub(r"\$\{[A-Z_]+:\?[^}]*\}", "x" * 24, v) for k, v in services["relay-a"]["environment"].items()}
    r = relay_check(CONFIG, env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "x" * 24 not in r.stdout + r.stderr


def test_kubernetes_manifests_fit_together(tmp_path):
    secret, configmap, deployment, service = k8s("Secret"), k8s("ConfigMap"), k8s("Deployment"), k8s("Service")
    spec = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] >= 2
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = configmap["data"]["relay.json5"]
    listen = re.search(r'server: \{ listen: "0\.0\.0\.0:(\d+)"', config).group(1)
    admin = re.search(r'admin: \{ listen: "0\.0\.0\.0:(\d+)"', config).group(1)
    assert ports == {"webhooks": int(listen), "admin": int(admin)}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "webhooks"}
    # The config from the ConfigMap, the variables from the Secret.
    assert container["args"] == ["serve", "--config", "/etc/relay/relay.json5"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert mount["mountPath"] == "/etc/relay"
    assert next(v for v in spec["volumes"] if v["name"] == "config")["configMap"]["name"] == configmap["metadata"]["name"]
    assert container["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert env_refs(config) <= set(secret["stringData"]), f"the Secret lacks {env_refs(config) - set(secret['stringData'])}"
    # The image's user (Dockerfile) and the pod's.
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER\s+(\S+)", dockerfile, re.M)
    assert "10001" in dockerfile and spec["securityContext"]["runAsUser"] == 10001
    assert spec["terminationGracePeriodSeconds"] > 10
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] in ports
    # The ConfigMap's config differs from docs/deploy/relay.json5 in its receiver only.
    assert re.sub(r'url: "https://receiver\.example\.com/', 'url: "http://sink:9099/', config) \
        .replace(" with a real receiver: the config every replica serves (/etc/relay/relay.json5). Replicas are",
                 ": the config every replica serves (mounted at /etc/relay/relay.json5). Replicas are").strip() == CONFIG.strip()
    env = dict(secret["stringData"])
    r = relay_check(config, env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "CHANGE-ME" not in r.stdout + r.stderr


def github_post(port: int, secret: str, body: dict) -> requests.Response:
    data = json.dumps(body).encode()
    sig = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    return requests.post(f"http://127.0.0.1:{port}/v1/hooks/github-style", data=data, timeout=10,
                         headers={"Content-Type": "application/json", "X-GitHub-Event": "order",
                                  "X-GitHub-Delivery": str(uuid.uuid4()), "X-Hub-Signature-256": sig})


@pytest.mark.skipif(not os.environ.get("RELAY_TEST_PG_URL"), reason="no PostgreSQL (run under Tests/pg/with-postgres)")
def test_two_relays_serve_the_documented_config_on_one_database(tmp_path):
    pg_url = os.environ["RELAY_TEST_PG_URL"]
    db = "relay_deploy_%d" % os.getpid()
    psql = [os.path.join(os.environ["RELAY_TEST_PG_BIN"], "psql"), pg_url, "-X", "-At", "-c"]
    subprocess.run(psql + [f"DROP DATABASE IF EXISTS {db}"], check=True, capture_output=True)
    subprocess.run(psql + [f"CREATE DATABASE {db}"], check=True, capture_output=True)
    sink_port = free_port()
    sink = subprocess.Popen([str(relay_binary()), "simulate", "sink", "--listen", f"127.0.0.1:{sink_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    secret, token = "gh-" + uuid.uuid4().hex, "adm-" + uuid.uuid4().hex
    env = {**os.environ, "RELAY_DATABASE_URL": re.sub(r"/[^/]*$", "/" + db, pg_url),
           "GITHUB_WEBHOOK_SECRET": secret, "RELAY_ADMIN_TOKEN": token}
    relays = []
    try:
        for k in range(2):
            port, admin = free_port(), free_port()
            config = (CONFIG.replace('"0.0.0.0:8080"', f'"127.0.0.1:{port}"')
                      .replace('"0.0.0.0:9090"', f'"127.0.0.1:{admin}"')
                      .replace("http://sink:9099/", f"http://127.0.0.1:{sink_port}/"))
            path = tmp_path / f"relay{k}.json5"
            path.write_text(config)
            proc = start_relay(path, env=env)
            relays.append((proc, port, admin))
        for proc, port, admin in relays:
            deadline = time.time() + 30
            while True:
                try:
                    if requests.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).status_code == 200:
                        break
                except requests.ConnectionError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.time() < deadline, "a relay did not get ready"
                time.sleep(0.05)
        (a, pa, aa), (b, pb, ab) = relays
        # One order's statuses, alternating between the replicas as a load balancer would.
        states = ["PLACED", "SHIPPED", "CANCELLED"] * 3
        for i, state in enumerate(states):
            r = github_post(pa if i % 2 == 0 else pb, secret, {"order": {"id": "O-7", "state": state, "n": i}})
            assert r.status_code == 202, r.text
        deadline = time.time() + 20
        while True:
            got = requests.get(f"http://127.0.0.1:{sink_port}/_sink/requests?path=/webhooks/relay", timeout=5).json()
            ns = [json.loads(q["body"])["order"]["n"] for q in got["requests"] if q["status"] == 200]
            if len(set(ns)) == len(states) or time.time() > deadline:
                break
            time.sleep(0.1)
        assert sorted(set(ns)) == list(range(len(states)))
        firsts = sorted(set(ns), key=ns.index)
        assert firsts == list(range(len(states))), f"arrival order {ns}"
        # The admin API: the token is needed, and both replicas see every event (one store).
        assert requests.get(f"http://127.0.0.1:{aa}/v1/events", timeout=5).status_code == 401
        for admin in (aa, ab):
            events = requests.get(f"http://127.0.0.1:{admin}/v1/events", timeout=5,
                                  headers={"Authorization": f"Bearer {token}"}).json()["events"]
            assert len(events) == len(states)
        # Operations act on the shared store, whichever relay is asked.
        auth = {"Authorization": f"Bearer {token}"}
        sink_url = f"http://127.0.0.1:{sink_port}"

        def delivered_ns():
            got = requests.get(f"{sink_url}/_sink/requests?path=/webhooks/relay", timeout=5).json()
            return [json.loads(q["body"])["order"]["n"] for q in got["requests"] if q["status"] == 200]

        def wait_for(pred, what, timeout=15):
            deadline = time.time() + timeout
            while not pred():
                assert time.time() < deadline, what
                time.sleep(0.1)

        # Paused through relay A: relay B delivers nothing either; resumed through B: it goes out.
        r = requests.post(f"http://127.0.0.1:{aa}/v1/destinations/demo-sink/pause", headers=auth, timeout=5)
        assert r.status_code == 200, r.text
        assert github_post(pb, secret, {"order": {"id": "O-8", "state": "PLACED", "n": 100}}).status_code == 202
        time.sleep(2)
        assert 100 not in delivered_ns(), "delivered while paused through the other relay"
        r = requests.post(f"http://127.0.0.1:{ab}/v1/destinations/demo-sink/resume", headers=auth, timeout=5)
        assert r.status_code == 200, r.text
        wait_for(lambda: 100 in delivered_ns(), "not delivered after the resume")
        # A dead letter made through one relay is seen, and replayed, through the other.
        requests.post(f"{sink_url}/_sink/faults", json=[{"path": "/webhooks/relay", "times": 1, "action": "status",
                                                         "status": 422}], timeout=5).raise_for_status()
        event = github_post(pa, secret, {"order": {"id": "O-9", "state": "PLACED", "n": 101}}).json()["eventId"]
        def dead():
            return requests.get(f"http://127.0.0.1:{ab}/v1/deliveries?state=dead", headers=auth, timeout=5).json()["deliveries"]
        wait_for(lambda: any(d["eventId"] == event for d in dead()), "no dead letter seen through relay B")
        metrics = requests.get(f"http://127.0.0.1:{ab}/metrics", headers=auth, timeout=5).text
        assert 'relay_deliveries_dead{destination="demo-sink"} 1' in metrics
        dead_id = next(d["id"] for d in dead() if d["eventId"] == event)
        r = requests.post(f"http://127.0.0.1:{aa}/v1/deliveries/{dead_id}/replay", headers=auth, timeout=5)
        assert r.status_code == 202, r.text
        wait_for(lambda: delivered_ns().count(101) >= 1, "the replayed dead letter was not delivered")

        errors = [stop_relay(proc) for proc, _, _ in relays]
        relays = []
        for err in errors:
            assert secret not in err and token not in err
            assert f"/{db}" in err       # the store's summary (user@host:port/db) is logged at start
    finally:
        for proc, _, _ in relays:
            proc.kill()
            proc.wait()
        sink.terminate()
        sink.wait(timeout=10)
        subprocess.run(psql + [f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)
