"""Render every kustomize overlay and check what it would apply.

Built-in kinds are validated offline against the Kubernetes JSON schemas shipped by the
``kubernetes-validate`` package (strict: unknown fields are errors). The custom resources
(PyTorchJob, SparkApplication, PodMonitor) are checked for structure, and their commands are
parsed by the real CLI parsers (torchrun's, distrec.train's, spark_jobs.build_bundle's) and the
mounted run config by distrec's config loader, so a manifest cannot drift from the code.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.support import K8S, REPO

OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
K8S_VERSIONS = ("1.29.0", "1.32.0")  # oldest and newest minor we claim to support
CUSTOM = {
    ("kubeflow.org/v1", "PyTorchJob"),
    ("sparkoperator.k8s.io/v1beta2", "SparkApplication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
POD_PATH = ("spec", "pytorchReplicaSpecs", "Worker", "template")


def _kustomize_cmd() -> list[str]:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed (see scripts/ci_deps.sh)")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [*_kustomize_cmd(), str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, f"kustomize build k8s/overlays/{overlay} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
    return found[0]


def dig(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        d = d[p]
    return d


def test_overlays_exist() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_builtin_resources_match_kubernetes_schemas(overlay: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    docs = render(overlay)
    builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in CUSTOM]
    kinds = {d["kind"] for d in builtin}
    assert {"ConfigMap", "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    for version in K8S_VERSIONS:
        for d in builtin:
            try:
                kv.validate(d, version, strict=True)
            except kv.ValidationError as e:
                pytest.fail(f"{overlay}: {d['kind']}/{d['metadata']['name']} (k8s {version}): {e}")
    unknown = (
        {(d["apiVersion"], d["kind"]) for d in docs}
        - CUSTOM
        - {(d["apiVersion"], d["kind"]) for d in builtin}
    )
    assert not unknown


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_template_is_a_valid_pod(overlay: str) -> None:
    """The PyTorchJob's worker template is a core/v1 PodTemplateSpec: validate it as one."""
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    job = one(render(overlay), "PyTorchJob")
    tmpl = dig(job, *POD_PATH)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "w"}, "spec": tmpl["spec"]}
    for version in K8S_VERSIONS:
        kv.validate(pod, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pytorchjob_structure(overlay: str) -> None:
    docs = render(overlay)
    job = one(docs, "PyTorchJob")
    assert job["apiVersion"] == "kubeflow.org/v1"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Worker"}, "elastic jobs use Worker replicas only"
    worker = specs["Worker"]
    ep = job["spec"]["elasticPolicy"]
    assert ep["rdzvBackend"] == "c10d"
    assert 1 <= ep["minReplicas"] <= worker["replicas"] <= ep["maxReplicas"]
    assert ep["maxRestarts"] >= 1 and job["spec"]["runPolicy"]["backoffLimit"] >= 1
    pod = dig(job, *POD_PATH)
    sec = pod["spec"]["securityContext"]
    assert sec["runAsNonRoot"] is True and sec["runAsUser"] != 0
    (c,) = pod["spec"]["containers"]
    assert c["name"] == "pytorch", "the training operator finds the container by this name"
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # One metrics port per local rank: metrics-<r> = 9400 + r, for r < nprocPerNode.
    nproc = int(job["spec"]["nprocPerNode"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {f"metrics-{r}": 9400 + r for r in range(nproc)}
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    if gpus is not None:
        assert int(gpus) == nproc, "one rank per GPU"
        names = {e["name"] for e in c["env"]}
        assert {"NCCL_DEBUG", "TORCH_NCCL_ASYNC_ERROR_HANDLING"} <= names
    # References resolve to objects of the same build (hashed ConfigMap name included).
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    one(docs, "ConfigMap", vols["config"]["configMap"]["name"])
    one(docs, "PersistentVolumeClaim", vols["data"]["persistentVolumeClaim"]["claimName"])
    one(docs, "ServiceAccount", pod["spec"]["serviceAccountName"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert set(mounts) <= set(vols)
    assert not c["image"].startswith("distrec"), "overlay must set the image"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_training_command_parses_with_distrec_cli(overlay: str, tmp_path: Path) -> None:
    """torchrun's parser, then distrec.train's parser, then the config loader on the ConfigMap."""
    from torch.distributed.run import get_args_parser

    from distrec.config import load_config
    from distrec.train import build_parser

    docs = render(overlay)
    job = one(docs, "PyTorchJob")
    pod = dig(job, *POD_PATH)
    (c,) = pod["spec"]["containers"]
    argv = [*c["command"], *c.get("args", [])]
    assert argv[0] == "torchrun"
    trun = get_args_parser().parse_args(argv[1:])
    assert trun.module and trun.training_script == "distrec.train"
    args = build_parser().parse_intermixed_args(trun.training_script_args)
    assert args.resume, "a restarted pod must continue from the latest checkpoint"
    # The --config path is the mounted ConfigMap: load that exact file content.
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["config"]
    assert args.config.startswith(mount + "/")
    cm = one(docs, "ConfigMap", vols["config"]["configMap"]["name"])
    key = args.config[len(mount) + 1 :]
    assert key in cm["data"], f"{args.config} is not a key of the ConfigMap"
    path = tmp_path / key
    path.write_text(cm["data"][key])
    cfg = load_config(args.model, str(path), list(args.overrides))
    data_mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["data"]
    assert cfg.run.dir.startswith(data_mount + "/") and cfg.data.bundle.startswith(data_mount + "/")
    assert cfg.metrics.enabled and cfg.metrics.addr == "0.0.0.0", "ranks must be scrapable"
    assert cfg.metrics.port == 9400
    assert cfg.data.batch_size % (int(job["spec"]["nprocPerNode"])) == 0
    (init,) = pod["spec"]["initContainers"]
    assert f"{cfg.data.bundle}/_manifest.json" in " ".join(init["command"]), "waits for the bundle"
    assert init["image"] == c["image"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_sparkapplication_structure_and_cli(overlay: str) -> None:
    from spark_jobs.build_bundle import build_parser
    from spark_jobs.options import parse_overrides

    docs = render(overlay)
    app = one(docs, "SparkApplication")
    assert app["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    spec = app["spec"]
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    prefix = "local:///opt/distrec/"
    assert spec["mainApplicationFile"].startswith(prefix)
    assert (REPO / spec["mainApplicationFile"][len(prefix) :]).is_file()
    args = build_parser().parse_args(spec["arguments"])
    parse_overrides(args.overrides)
    assert args.master == "none", "in cluster mode spark-submit must choose the master"
    assert args.out.startswith("/data/") and args.input.startswith("/data/")
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    one(docs, "PersistentVolumeClaim", claim)
    for role in ("driver", "executor"):
        r = spec[role]
        assert r["securityContext"]["runAsNonRoot"] is True
        assert r["volumeMounts"][0]["mountPath"] == "/data"
    sa = spec["driver"]["serviceAccount"]
    one(docs, "ServiceAccount", sa)
    binding = one(docs, "RoleBinding")
    assert {"kind": "ServiceAccount", "name": sa} == {
        k: binding["subjects"][0][k] for k in ("kind", "name")
    }
    assert binding["subjects"][0]["namespace"] == app["metadata"]["namespace"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_podmonitor_scrapes_every_rank(overlay: str) -> None:
    docs = render(overlay)
    pm = one(docs, "PodMonitor")
    job = one(docs, "PyTorchJob")
    pod = dig(job, *POD_PATH)
    labels = pod["metadata"]["labels"]
    assert pm["spec"]["selector"]["matchLabels"].items() <= labels.items()
    scraped = {e["port"] for e in pm["spec"]["podMetricsEndpoints"]}
    declared = {p["name"] for p in pod["spec"]["containers"][0]["ports"]}
    assert declared <= scraped, f"ports without a scrape endpoint: {declared - scraped}"
    assert pm["metadata"]["namespace"] == job["metadata"]["namespace"]


def test_plain_scrape_config_passes_promtool(tmp_path: Path) -> None:
    """promtool checks the file; Debian's build lacks Kubernetes discovery, so the
    kubernetes_sd job is checked structurally and promtool sees the rest."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: run scripts/ci_deps.sh (Debian package prometheus)")
    cfg = yaml.safe_load((K8S / "base" / "monitoring" / "prometheus-scrape.yml").read_text())
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert set(jobs) == {"distrec", "distrec-k8s"}
    k8s = jobs["distrec-k8s"]
    assert k8s["kubernetes_sd_configs"] == [{"role": "pod"}]
    keep = {
        r["source_labels"][0]: r["regex"]
        for r in k8s["relabel_configs"]
        if r.get("action") == "keep"
    }
    pod_label = "__meta_kubernetes_pod_label_app_kubernetes_io_name"
    assert keep[pod_label] == "distrec-train" and keep["__meta_kubernetes_pod_container_port_name"]
    path = tmp_path / "prometheus.yml"
    probe = subprocess.run(
        [promtool, "check", "config", str(K8S / "base" / "monitoring" / "prometheus-scrape.yml")],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 and "kubernetes_sd_configs not found" in probe.stdout + probe.stderr:
        cfg["scrape_configs"] = [
            j for j in cfg["scrape_configs"] if "kubernetes_sd_configs" not in j
        ]
        path.write_text(yaml.safe_dump(cfg))
    else:
        path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([promtool, "check", "config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
