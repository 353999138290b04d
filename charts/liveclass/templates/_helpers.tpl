{{/* Names and labels shared by every template. */}}

{{- define "liveclass.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every object name: the release name, plus the chart name unless it has it. */}}
{{- define "liveclass.fullname" -}}
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

{{- define "liveclass.operator.fullname" -}}
{{- printf "%s-operator" (include "liveclass.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "liveclass.gateway.fullname" -}}
{{- printf "%s-gateway" (include "liveclass.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "liveclass.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "liveclass.operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "liveclass.leaseName" -}}
{{- default (include "liveclass.operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "liveclass.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/part-of: liveclass
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of a component ("operator" or "gateway"); never change once installed. */}}
{{- define "liveclass.selectorLabels" -}}
app.kubernetes.io/name: {{ include "liveclass.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "liveclass.operator.labels" -}}
{{ include "liveclass.labels" . }}
{{ include "liveclass.selectorLabels" (dict "root" . "component" "operator") }}
{{- end }}

{{- define "liveclass.gateway.labels" -}}
{{ include "liveclass.labels" . }}
{{ include "liveclass.selectorLabels" (dict "root" . "component" "gateway") }}
{{- end }}

{{- define "liveclass.operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Rules the values allow only together; the schema checks each value on its own. */}}
{{- define "liveclass.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail (printf "replicas: %d needs leaderElection.enabled: true (without a Lease every replica would reconcile every LiveClass)" (int .Values.replicas)) }}
{{- end }}
{{- if .Values.gateway.classes }}
{{- fail "gateway.classes is no longer a value: the gateway routes every LiveClass at /<namespace>/<class>/ws without a list (remove gateway.classes)" }}
{{- end }}
{{- if eq (int .Values.gateway.notLivePort) (int .Values.gateway.containerPort) }}
{{- fail (printf "gateway.notLivePort and gateway.containerPort are both %d: they must differ" (int .Values.gateway.containerPort)) }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled: true needs metrics.service.enabled: true (the ServiceMonitor selects that Service)" }}
{{- end }}
{{- end }}
