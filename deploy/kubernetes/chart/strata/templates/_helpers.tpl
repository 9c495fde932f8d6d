{{/*
The CSI driver's name. PersistentVolumes, StorageClasses and
VolumeSnapshotClasses record it, and strata up answers GetPluginInfo with it:
it is not a value.
*/}}
{{- define "strata.driverName" -}}
strata.csi.io
{{- end }}

{{/* Prefix of the names of this release's objects. */}}
{{- define "strata.fullname" -}}
{{- if contains "strata" .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-strata" .Release.Name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "strata.labels" -}}
app.kubernetes.io/name: strata
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Selector labels of a component: call with (list $ "node"). */}}
{{- define "strata.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: strata
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "strata.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{/* The host directory of the CSI socket: kubelet finds it there. */}}
{{- define "strata.socketDir" -}}
{{ .Values.kubeletDir }}/plugins/{{ include "strata.driverName" . }}
{{- end }}

{{/* Where every container of the chart mounts the socket directory. */}}
{{- define "strata.socketMount" -}}/csi{{- end }}

{{- define "strata.socketPath" -}}
{{ include "strata.socketMount" . }}/csi.sock
{{- end }}

{{- define "strata.nodeServiceAccount" -}}
{{ include "strata.fullname" . }}-node
{{- end }}

{{- define "strata.controllerServiceAccount" -}}
{{ include "strata.fullname" . }}-controller
{{- end }}
