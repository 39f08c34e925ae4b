{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "guestbook-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object name prefix. A release already named after the chart is not repeated,
so `helm install guestbook-operator` gives "guestbook-operator", not
"guestbook-operator-guestbook-operator".
*/}}
{{- define "guestbook-operator.fullname" -}}
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

{{- define "guestbook-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "guestbook-operator.labels" -}}
helm.sh/chart: {{ include "guestbook-operator.chart" . }}
{{ include "guestbook-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: guestbook-operator
{{- end }}

{{/* Selector labels: immutable in a Deployment, so no version in here. */}}
{{- define "guestbook-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "guestbook-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "guestbook-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "guestbook-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "guestbook-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
