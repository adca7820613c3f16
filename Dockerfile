# The sre-agent operator image: `docker build -t sre-agent .`
#
# BASE is any Python 3.11+ image with `python3 -m venv` and a shell. The default is the public
# slim image; `scripts/images operator` builds FROM a local Debian python3.11 base instead
# (`--build-arg BASE=...`), without a registry.
ARG BASE=python:3.11-slim

# Builder: the package and its dependencies (the versions pinned in requirements.lock) in a venv,
# compiled to bytecode.
FROM ${BASE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md requirements.lock ./
COPY sre_agent ./sre_agent
COPY prompts ./prompts
COPY policies ./policies
COPY crds ./crds
COPY replay/incidents ./replay/incidents
RUN python3 -m venv /opt/sre-agent \
    && /opt/sre-agent/bin/pip install --no-compile -c requirements.lock . \
    && /opt/sre-agent/bin/pip uninstall -y -q pip setuptools \
    && python3 -m compileall -q --invalidation-mode unchecked-hash /opt/sre-agent/lib

# Runtime: the venv only, as uid 10001; no pip, no sources, no build tools.
FROM ${BASE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/sre-agent/bin:$PATH
COPY --from=builder /opt/sre-agent /opt/sre-agent
RUN echo 'sre-agent:x:10001:10001:sre-agent:/nonexistent:/sbin/nologin' >>/etc/passwd \
    && echo 'sre-agent:x:10001:' >>/etc/group \
    && /opt/sre-agent/bin/python3 -c "import sre_agent.cli, sre_agent.operator.app"
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080 9090
# deploy/deployment.yaml's `args` (e.g. ["-n", "shop"]) are options of `run`
ENTRYPOINT ["sre-agent", "run"]
