#!/usr/bin/env bash
# System packages the ops tests need (tests/ops): a real Prometheus server, a Pushgateway and
# promtool (Debian's prometheus / prometheus-pushgateway), and kustomize to render k8s/overlays.
# Idempotent and quiet; CI runs it as root before the tests. Installs nothing that is there.
set -euo pipefail

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || need+=(prometheus-pushgateway)

# kustomize: a standalone `kustomize`, or `kubectl kustomize` (kubectl >= 1.21 embeds kustomize
# v4+, which the overlays need: `labels`, `patches`). Debian's kubernetes-client is kubectl 1.20
# (kustomize v2), too old, so it is not a fallback; tests/ops skip the render tests with a
# message when neither is present.
have_kustomize=0
if command -v kustomize >/dev/null 2>&1; then
  have_kustomize=1
elif command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  have_kustomize=1
fi

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ci_deps.sh: need root to install: ${need[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # The packages' postinst scripts try to start services; nothing runs in a container without
  # an init system, and the tests start their own servers on loopback ports 9450-9499.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ "$have_kustomize" -eq 0 ]; then
  echo "ci_deps.sh: warning: no kustomize or kubectl found; k8s render tests will skip" >&2
fi
