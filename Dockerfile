# The sre-agent operator image: `docker build -t sre-agent .`
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY sre_agent ./sre_agent
COPY prompts ./prompts
COPY policies ./policies
COPY crds ./crds
COPY replay/incidents ./replay/incidents
RUN pip install . && rm -rf /src

RUN groupadd --system --gid 10001 sre-agent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin sre-agent
USER 10001:10001
WORKDIR /tmp

EXPOSE 8080 9090
ENTRYPOINT ["sre-agent", "run"]
