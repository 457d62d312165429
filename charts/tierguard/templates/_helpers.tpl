{{- define "tierguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tierguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tierguard.labels" -}}
app.kubernetes.io/name: {{ include "tierguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tierguard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tierguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tierguard.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tierguard.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image: repository@digest when a digest is set, else repository:tag. */}}
{{- define "tierguard.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The watched namespaces, as a JSON list (empty: every namespace). */}}
{{- define "tierguard.watchNamespaces" -}}
{{- $namespaces := .Values.watchNamespaces | default list -}}
{{- if and .Values.watchNamespace (not (has .Values.watchNamespace $namespaces)) -}}
{{- $namespaces = append $namespaces .Values.watchNamespace -}}
{{- end -}}
{{- toJson $namespaces -}}
{{- end -}}

{{/* The rules the controller needs in each namespace it watches (cluster-wide or namespaced). */}}
{{- define "tierguard.rules" -}}
- apiGroups: ["tierguard.dev"]
  resources: ["memorytiers"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["tierguard.dev"]
  resources: ["memorytiers/status"]
  verbs: ["get", "patch"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
