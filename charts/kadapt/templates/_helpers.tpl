{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "kadapt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object name prefix: "<release>" when it already contains the chart name, else "<release>-<chart>". */}}
{{- define "kadapt.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of cluster-scoped objects: with the release namespace, so that releases of the same
name in different namespaces (one operator per team namespace) do not collide. */}}
{{- define "kadapt.clusterName" -}}
{{- printf "%s-%s" (include "kadapt.fullname" .) .Release.Namespace | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kadapt.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that never change over the release's life: the Deployment's selector. */}}
{{- define "kadapt.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kadapt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "kadapt.labels" -}}
helm.sh/chart: {{ include "kadapt.chart" . }}
{{ include "kadapt.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kadapt
{{- end }}

{{- define "kadapt.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kadapt.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaces served in namespaced mode, as a JSON list (default: the release namespace). */}}
{{- define "kadapt.watchNamespaces" -}}
{{- if .Values.watch.namespaces }}
{{- toJson (uniq .Values.watch.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{- define "kadapt.peeringName" -}}
{{- default (include "kadapt.fullname" .) .Values.leaderElection.peeringName }}
{{- end }}

{{- define "kadapt.peering" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end }}
{{- end }}

{{/* "repository:tag" or "repository@digest"; the tag defaults to the chart's appVersion. */}}
{{- define "kadapt.imageRef" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* Whether the cluster serves a Prometheus Operator kind; call with (dict "ctx" $ "kind" "PodMonitor"). */}}
{{- define "kadapt.hasMonitoringKind" -}}
{{- if or .ctx.Values.monitoring.assumeCRDsPresent (.ctx.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" .kind)) }}true{{ end }}
{{- end }}

{{- define "kadapt.monitoringLabels" -}}
{{ include "kadapt.labels" . }}
{{- with .Values.monitoring.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Checks across values that values.schema.json cannot express with a clear message. */}}
{{- define "kadapt.validate" -}}
{{- if and .Values.watch.allNamespaces .Values.watch.namespaces }}
{{- fail "watch.namespaces must be empty when watch.allNamespaces is true (the operator then serves every namespace); remove one of them" }}
{{- end }}
{{- if lt (float64 .Values.config.restartBackoffMaxSeconds) (float64 .Values.config.restartBackoffSeconds) }}
{{- fail "config.restartBackoffMaxSeconds must be at least config.restartBackoffSeconds" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ: the operator serves /metrics and /healthz on separate ports" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.config.progressPort) }}
{{- fail "metrics.port and config.progressPort must differ (the operator's settings reject equal ports)" }}
{{- end }}
{{- if and .Values.rbac.create (not .Values.serviceAccount.create) (not .Values.serviceAccount.name) }}
{{- fail "serviceAccount.name is required when serviceAccount.create is false: the operator must not run as the namespace's default ServiceAccount" }}
{{- end }}
{{- end }}
