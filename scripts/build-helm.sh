#!/usr/bin/env bash
# Builds helm from source through the Go module proxy (like scripts/build-controlplane.sh), into a
# version-keyed cache outside the repo, and prints the path of the binary.
# A second run with the binary present does nothing.
set -euo pipefail
HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE=${SRE_AGENT_CACHE:-$HOME/.cache/sre-agent}
BIN=$CACHE/helm-$HELM_VERSION/bin
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$BIN"

if command -v flock >/dev/null; then
  exec 9>"$CACHE/.build-helm.lock"
  flock 9
fi

have() { [ -x "$BIN/helm" ] && [ "$("$BIN/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ] \
  && [ -f "$BIN/.k8s-version-set" ]; }
if ! have; then
  command -v go >/dev/null || { echo "build-helm: 'go' not found; Go is needed for the one-time build" >&2; exit 1; }
  echo "building helm $HELM_VERSION (one-time, ~5 min on 2 cores)" >&2
  T0=$SECONDS
  SRC=$CACHE/src/helm-$HELM_VERSION; mkdir -p "$SRC"
  # The Kubernetes version `helm template` and `helm lint` assume, as helm's Makefile sets it:
  # 1.<minor of the client-go helm builds with> (1.20 otherwise).
  KMINOR=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c '
import json, re, sys
mod = open(json.load(sys.stdin)["GoMod"]).read()
print(re.search(r"k8s\.io/client-go v0\.(\d+)\.", mod)[1])')
  LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    LDFLAGS+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$KMINOR"
  done
  GOBIN=$SRC/bin go install -trimpath -ldflags "$LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$SRC/bin/helm" "$BIN/helm"
  touch "$BIN/.k8s-version-set"
  echo "build-helm: built in $((SECONDS - T0))s into $BIN" >&2
fi
echo "$BIN/helm"
