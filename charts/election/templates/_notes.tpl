{{/*
Warnings appended to NOTES.txt (one include at its end, so that NOTES.txt
itself stays easy to merge): configurations that render but probably do not
do what the user wants.
*/}}
{{- define "election.notes.warnings" -}}
{{- $zkImage := .Values.zookeeper.image.repository }}
{{- if and .Values.zookeeper.enabled (ne (last (splitList "/" $zkImage)) "zookeeper") }}

NOTE: zookeeper.image.repository is {{ $zkImage }}, not the official zookeeper image.
The chart configures the servers through the official entrypoint, which writes /conf/zoo.cfg
from the ZOO_* variables (tickTime {{ .Values.zookeeper.tickTime }}, syncLimit {{ .Values.zookeeper.syncLimit }}, the server list). An image that
ships its own zoo.cfg or entrypoint ignores them: check that its syncLimit x tickTime stays
below election.zkSessionTimeout ({{ .Values.election.zkSessionTimeout }}), which the election's lease logic assumes.
{{- end }}
{{- if not .Values.zookeeper.auth.enabled }}

NOTE: ZooKeeper credentials are off (zookeeper.auth.enabled=false): the election's znodes are
open to the world, so any client that reaches the ensemble{{ if and .Values.zookeeper.enabled .Values.networkPolicy.enabled }} (the NetworkPolicy admits only this
release's pods, where the cluster's network enforces NetworkPolicies){{ end }} could delete the leader's
node or rewrite the fencing floor. Turn them on with helm upgrade {{ .Release.Name }} ./charts/election
-n {{ .Release.Namespace }} --reuse-values --set zookeeper.auth.enabled=true (a Secret is generated once), or
give zookeeper.auth.existingSecret.
{{- end }}
{{- if and .Values.kubernetes.labelPod (not (include "election.admissionPolicy" .)) }}

NOTE: no ValidatingAdmissionPolicy was installed ({{ if .Values.kubernetes.admissionPolicy.enabled }}it needs Kubernetes >= 1.30, whose API
server serves admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy{{ else }}kubernetes.admissionPolicy.enabled=false{{ end }}). The Role
names the pods {{ include "election.fullname" . }}-0..{{ sub (int .Values.replicaCount) 1 }} instead, so a replica's token may patch only this release's pods,
but anything a patch can change on them (labels, annotations, a container image). Change the
replica count with helm upgrade --set replicaCount=N: a pod added by kubectl scale is not in the Role.
{{- end }}
{{- if and .Values.prometheusRule.enabled (not .Values.serviceMonitor.enabled) (not .Values.prometheusRule.selector) }}

NOTE: the PrometheusRule selects {{ include "election.metricsSelector" . }}, the labels the
chart's ServiceMonitor produces, but serviceMonitor.enabled is false: set prometheusRule.selector
to match however your Prometheus scrapes the pods, or ElectionNoLeader fires for lack of series.
{{- end }}
{{- end }}
