{{- define "hgw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "hgw.labels" -}}
app.kubernetes.io/name: hgw
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hgw.selector" -}}
app.kubernetes.io/name: hgw
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hgw.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "hgw.secretName" -}}
{{ .Values.existingSecret | default (printf "%s-secrets" (include "hgw.fullname" .)) }}
{{- end -}}

{{/* The non-root user of the image; also the group allowed into the agent's socket folder. */}}
{{- define "hgw.securityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: {drop: [ALL]}
seccompProfile: {type: RuntimeDefault}
{{- end -}}
