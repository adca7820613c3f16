#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kubectl and
# metrics-server from source
# through the Go module proxy, into a version-keyed cache outside the repo.
# A second run with the binaries present does nothing.
set -euo pipefail
K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.8}
CACHE=${SRE_AGENT_CACHE:-$HOME/.cache/sre-agent}
BIN=$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$BIN"

# One build at a time per cache (two test sessions starting together wait for each other).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.build.lock"
  flock 9
fi

have() { [ -x "$BIN/$1" ] && "$BIN/$1" --version 2>/dev/null | grep -F -- "$2" >/dev/null; }

need_go() {
  command -v go >/dev/null || { echo "build-controlplane: 'go' not found; Go >= 1.26 is needed for the one-time build" >&2; exit 1; }
  local v
  v=$(go env GOVERSION); v=${v#go}
  case "$v" in 1.2[6-9]*|1.[3-9][0-9]*|[2-9].*) ;; *)
    echo "build-controlplane: Go $v is too old; Kubernetes $K8S_VERSION needs Go >= 1.26 (GOTOOLCHAIN=local)" >&2; exit 1 ;;
  esac
}
T0=$SECONDS

if ! have etcd "${ETCD_VERSION#v}"; then
  need_go
  echo "building etcd $ETCD_VERSION (one-time, ~2 min)" >&2
  SRC=$CACHE/src/etcd-$ETCD_VERSION; mkdir -p "$SRC"; cd "$SRC"
  cat > go.mod <<GOMOD
module example.com/etcd-bins

go 1.26.0

require (
	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION
	go.etcd.io/etcd/server/v3 $ETCD_VERSION
)
GOMOD
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/server/v3"
)
GO
  go mod tidy
  go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

if ! have kube-apiserver "$K8S_VERSION" || ! have kube-controller-manager "$K8S_VERSION" \
  || ! have kube-scheduler "$K8S_VERSION" || ! have kubelet "$K8S_VERSION" || ! [ -x "$BIN/kubectl" ]; then
  need_go
  echo "building Kubernetes $K8S_VERSION (one-time, ~12 min on 2 cores with a warm module cache)" >&2
  SRC=$CACHE/src/k8s-$K8S_VERSION; mkdir -p "$SRC"; cd "$SRC"
  SV="v0.${K8S_VERSION#v1.}"
  rm -f go.mod go.sum
  go mod init example.com/k8s-bins >/dev/null 2>&1
  KINFO=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION")
  KMOD=$(python3 -c 'import json,sys;print(json.loads(sys.argv[1])["GoMod"])' "$KINFO")
  KCOMMIT=$(python3 -c 'import json,sys;print((json.loads(sys.argv[1]).get("Origin") or {}).get("Hash",""))' "$KINFO")
  for m in $(sed -n 's|^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/.*|\1|p' "$KMOD"); do
    go mod edit -replace="$m=$m@$SV"
  done
  GD=$(sed -n 's/^godebug default=\(go[0-9.]*\)$/\1/p' "$KMOD" | head -1)
  [ -z "$GD" ] || go mod edit -godebug="default=$GD"
  go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
  cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy
  MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
  DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  LDFLAGS="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDFLAGS+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR"
    LDFLAGS+=" -X $p.gitTreeState=clean -X $p.buildDate=$DATE"
    [ -z "$KCOMMIT" ] || LDFLAGS+=" -X $p.gitCommit=$KCOMMIT"
  done
  go build -trimpath -ldflags "$LDFLAGS" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet
fi
# metrics-server serves metrics.k8s.io from the real node's kubelet (kubectl top, the gatherer).
MS_VERSION=${METRICS_SERVER_VERSION:-v0.9.0}
if ! [ -x "$BIN/metrics-server" ] || ! "$BIN/metrics-server" --version 2>/dev/null | grep -qF -- "$MS_VERSION"; then
  need_go
  echo "building metrics-server $MS_VERSION (one-time, ~3 min)" >&2
  SRC=$CACHE/src/metrics-server-$MS_VERSION; mkdir -p "$SRC"; cd "$SRC"
  GOBIN=$SRC/bin go install -trimpath \
    -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$MS_VERSION" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$MS_VERSION"
  mv "$SRC/bin/metrics-server" "$BIN/metrics-server"
fi
[ $((SECONDS - T0)) -lt 2 ] || echo "build-controlplane: built in $((SECONDS - T0))s into $BIN" >&2
echo "$BIN"
