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

{{/*
A ServiceAccount token for the containers that call the Kubernetes API (the
sidecars), mounted where client-go looks for it. The pods do not automount
one: the strata container, privileged and on the host's network, and the
sidecars that make no API call get no credentials.
*/}}
{{- define "strata.apiTokenVolume" -}}
- name: api-token
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3600
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end }}

{{- define "strata.apiTokenMount" -}}
- name: api-token
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{/* NODE_NAME, the Kubernetes node's name, for strata up and the sidecars that run on each node. */}}
{{- define "strata.nodeNameEnv" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- end }}

{{/*
The node DaemonSets: one for every node, or one per value of
node.groups.nodeLabel. Each is a dict with suffix (of the DaemonSet's name),
group (the label value, for the pod label strata.io/node-group),
nodeSelector and labels (the Strata labels). Returned as JSON: call with
include and fromJson.
*/}}
{{- define "strata.nodeGroups" -}}
{{- $node := .Values.node -}}
{{- $groups := list -}}
{{- if $node.groups.nodeLabel -}}
{{- if not $node.groups.values -}}
{{- fail "node.groups.nodeLabel is set and node.groups.values is empty: list the label's values, each with its Strata labels" -}}
{{- end -}}
{{- range $value, $labels := $node.groups.values -}}
{{- $suffix := $value | lower | replace "_" "-" | replace "." "-" | trimAll "-" -}}
{{- $selector := merge (dict $node.groups.nodeLabel $value) (deepCopy ($node.nodeSelector | default dict)) -}}
{{- $strata := merge (deepCopy ($labels | default dict)) (deepCopy ($node.labels | default dict)) -}}
{{- $groups = append $groups (dict "suffix" (printf "-%s" $suffix) "group" $value "nodeSelector" $selector "labels" $strata) -}}
{{- end -}}
{{- else -}}
{{- $groups = append $groups (dict "suffix" "" "group" "" "nodeSelector" ($node.nodeSelector | default dict) "labels" ($node.labels | default dict)) -}}
{{- end -}}
{{- dict "groups" $groups | toJson -}}
{{- end }}
