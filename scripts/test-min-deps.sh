#!/usr/bin/env bash
# The declared lower bounds hold what they promise: installs every runtime dependency of
# pyproject.toml at exactly its minimum (`>=X` becomes `==X`) in a venv under the cache, then
# runs the unit tests against them. The venv is keyed by the pins: a second run with the same
# lower bounds reuses it and only runs the tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${SRE_AGENT_CACHE:-$HOME/.cache/sre-agent}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PINS=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*(,.*)?", dep)
    if not m:
        raise SystemExit(f"test-min-deps: dependency {dep!r} has no '>=' lower bound")
    print(f"{m[1]}=={m[2]}")
PY
)
# The test tools are not runtime dependencies: their declared ranges, not their minimums.
TOOLS=$(python3 -c 'import tomllib;print("\n".join(d for d in tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]["dev"] if d.split(">")[0].split("=")[0] in ("pytest","pytest-asyncio","hypothesis")))')
KEY=$(printf 'v2\n%s\n%s\n%s\n' "$(python3 -c 'import sys;print(sys.version.split()[0])')" "$PINS" "$TOOLS" | sha256sum | cut -c1-16)
VENV=$CACHE/min-deps-$KEY
if ! [ -x "$VENV/.ready" ]; then
  echo "test-min-deps: installing the minimum versions into $VENV:" $PINS >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install -q $PINS $TOOLS hatchling editables
  printf '#!/bin/sh\n' >"$VENV/.ready"; chmod +x "$VENV/.ready"
fi
"$VENV/bin/pip" freeze --all 2>/dev/null | grep -iE "^($(echo "$PINS" | sed 's/==.*//' | paste -sd'|'))==" >&2 || true
# This checkout, editable, without touching the pinned dependencies (offline, a second or two).
"$VENV/bin/pip" install -q --no-deps --no-build-isolation -e .
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/unit "$@"
