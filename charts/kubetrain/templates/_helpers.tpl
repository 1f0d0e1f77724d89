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

{{/* The name of the TrainingJob CRD, as files/kubetrain.io_trainingjobs.yaml has it. */}}
{{- define "kubetrain.crdName" -}}
{{- (.Files.Get "files/kubetrain.io_trainingjobs.yaml" | fromYaml).metadata.name -}}
{{- end -}}

{{/* Who has the TrainingJob CRD: "ours" (absent, or this release's: render it), else
"someone-else" (it exists outside this release: leave it alone). */}}
{{- define "kubetrain.crdOwnership" -}}
{{- $live := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" (include "kubetrain.crdName" .) -}}
{{- if not $live -}}
ours
{{- else -}}
{{- $labels := $live.metadata.labels | default dict -}}
{{- $annotations := $live.metadata.annotations | default dict -}}
{{- if and (eq (get $labels "app.kubernetes.io/managed-by") "Helm") (eq (get $annotations "meta.helm.sh/release-name") .Release.Name) (eq (get $annotations "meta.helm.sh/release-namespace") .Release.Namespace) -}}
ours
{{- else -}}
someone-else
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Ray pods the operator creates (kubetrain_operator.naming: JobRef.labels, LABEL_ROLE). */}}
{{- define "kubetrain.rayPodSelector" -}}
matchLabels:
  app.kubernetes.io/managed-by: kubetrain-operator
matchExpressions:
  - key: kubetrain.io/role
    operator: In
    values: [head, worker]
{{- end -}}
