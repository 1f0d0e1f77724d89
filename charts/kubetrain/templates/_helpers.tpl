{{/* Full name of the release's objects. */}}
{{- define "kubetrain.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "kubetrain.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "kubetrain.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "kubetrain.serviceAccountName" -}}
{{- default (include "kubetrain.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The operator's RBAC rules: files/operator-rules.yaml, the file the RBAC test binds,
plus files/peering-rules.yaml when peering is on. */}}
{{- define "kubetrain.rules" -}}
{{- $rules := .Files.Get "files/operator-rules.yaml" | fromYamlArray -}}
{{- if .Values.peering.name -}}
{{- $rules = concat $rules (.Files.Get "files/peering-rules.yaml" | fromYamlArray) -}}
{{- end -}}
{{- toYaml $rules -}}
{{- end -}}
