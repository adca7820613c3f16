"""sre-agent: a Kubernetes operator that diagnoses unhealthy pods and acts only within policy."""
