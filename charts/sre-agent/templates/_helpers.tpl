{{/* The name of every object (as in deploy/): sre-agent unless nameOverride is set. */}}
{{- define "sre-agent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels on every object; the selector uses app.kubernetes.io/name only, as deploy/ does. */}}
{{- define "sre-agent.labels" -}}
app.kubernetes.io/name: {{ include "sre-agent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "sre-agent.serviceAccount" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "sre-agent.name" . }}
{{- end -}}
