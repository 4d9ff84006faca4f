{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "election.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name of the release, truncated to 63 characters. When the
release name already contains the chart name it is used alone, so that
`helm install election ./charts/election` gives pods election-0, election-1...
*/}}
{{- define "election.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "election.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels shared by every resource (without name, instance, component, version).
*/}}
{{- define "election.commonLabels" -}}
helm.sh/chart: {{ include "election.chart" . }}
app.kubernetes.io/part-of: {{ include "election.name" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of the election pods.
*/}}
{{- define "election.selectorLabels" -}}
app.kubernetes.io/name: {{ include "election.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: election
{{- end }}

{{/*
Labels of the election pods: the selector labels and what the user sets
(commonLabels; podLabels are added by the template). Nothing derived from
the chart's version: a chart bump that changes nothing in the pods must not
restart them.
*/}}
{{- define "election.podLabels" -}}
{{ include "election.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the election resources.
*/}}
{{- define "election.labels" -}}
{{ include "election.selectorLabels" . }}
app.kubernetes.io/version: {{ default .Chart.AppVersion .Values.image.tag | quote }}
{{ include "election.commonLabels" . }}
{{- end }}

{{/*
Name prefix of the ZooKeeper resources; pods are <this>-0..M-1.
*/}}
{{- define "election.zookeeper.fullname" -}}
{{- printf "%s-zookeeper" (include "election.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Headless Service of the ZooKeeper servers (stable DNS names per pod).
*/}}
{{- define "election.zookeeper.headless" -}}
{{- printf "%s-headless" (include "election.zookeeper.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the ZooKeeper pods.
*/}}
{{- define "election.zookeeper.selectorLabels" -}}
app.kubernetes.io/name: {{ include "election.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: zookeeper
{{- end }}

{{/*
Labels of the ZooKeeper pods: the selector labels and commonLabels, as
election.podLabels.
*/}}
{{- define "election.zookeeper.podLabels" -}}
{{ include "election.zookeeper.selectorLabels" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the ZooKeeper resources.
*/}}
{{- define "election.zookeeper.labels" -}}
{{ include "election.zookeeper.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.zookeeper.image.tag | quote }}
{{ include "election.commonLabels" . }}
{{- end }}

{{/*
Name of the election ServiceAccount.
*/}}
{{- define "election.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "election.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- /* The schema requires a name: never the namespace's `default`. */}}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Election image reference: repository:tag, or repository@digest when a digest is set.
*/}}
{{- define "election.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Pod names of the election StatefulSet, one per line: what the Role may touch.
*/}}
{{- define "election.podNames" -}}
{{- $fullname := include "election.fullname" . }}
{{- range $i := until (int .Values.replicaCount) }}
{{ printf "%s-%d" $fullname $i }}
{{- end }}
{{- end }}

{{/*
The port the election pods connect to on the bundled servers: 2281 (TLS,
`secureClientPort`) when they use TLS, else 2181.
*/}}
{{- define "election.zookeeper.clientPort" -}}
{{- ternary 2281 2181 (eq (include "election.zookeeper.clientsUseTls" .) "true") }}
{{- end }}

{{/*
"true" when the replicas reach ZooKeeper over TLS: with zookeeper.tls.enabled,
except at step 1 of zookeeper.tls.migration (the bundled servers open their
TLS port first; the replicas move at step 2). Else "".
*/}}
{{- define "election.zookeeper.clientsUseTls" -}}
{{- $t := .Values.zookeeper.tls }}
{{- if and $t.enabled (not (and .Values.zookeeper.enabled (eq (int $t.migration) 1))) }}true{{ end }}
{{- end }}

{{/*
"true" when the bundled servers' plain client port 2181 is open to the
replicas (all addresses, Services, NetworkPolicy): without TLS, and at steps
1 and 2 of zookeeper.tls.migration, while replicas may still dial it. Else ""
(2181 listens on loopback only, for the probes).
*/}}
{{- define "election.zookeeper.plainOpen" -}}
{{- $t := .Values.zookeeper.tls }}
{{- if or (not $t.enabled) (has (int $t.migration) (list 1 2)) }}true{{ end }}
{{- end }}

{{/*
Whether the bundled servers serve their own metrics (ZooKeeper's Prometheus
metrics provider on port 7000) for a ServiceMonitor: "true" or nothing.
*/}}
{{- define "election.zookeeper.metrics" -}}
{{- if and .Values.zookeeper.enabled .Values.serviceMonitor.enabled (dig "metrics" "enabled" true .Values.zookeeper) -}}
true
{{- end -}}
{{- end }}

{{/*
Secret with the bundled servers' certificate: zookeeper.tls.serverSecretName,
else zookeeper.tls.secretName.
*/}}
{{- define "election.zookeeper.serverTlsSecret" -}}
{{- default .Values.zookeeper.tls.secretName .Values.zookeeper.tls.serverSecretName }}
{{- end }}

{{/*
zoo.cfg lines of the bundled servers' TLS (ZOO_CFG_EXTRA items): the client
port over TLS through Netty, and with zookeeper.tls.quorum the quorum too.
PEM stores: the key store is tls.key + tls.crt joined by the container's
command (ZooKeeper reads key and chain from one file), the trust store is
ca.crt. Host names are not verified (clients and peers connect from pod IPs);
what authenticates is the certificate chain to the release's CA.
*/}}
{{- define "election.zookeeper.tlsConfig" -}}
{{- $t := .Values.zookeeper.tls }}
{{- $lines := list
  "secureClientPort=2281"
  "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory"
  "ssl.keyStore.location=/zk-tls-keystore/keystore.pem"
  "ssl.keyStore.type=PEM"
  "ssl.trustStore.location=/zk-tls/ca.crt"
  "ssl.trustStore.type=PEM"
  (printf "ssl.clientAuth=%s" (ternary "need" "none" $t.clientCertificate))
  "ssl.clientHostnameVerification=false" }}
{{- if $t.quorum }}
{{- /* A migration from plain text (see zookeeper.tls.migration): at step 1
the servers still dial their peers in plain text but accept TLS too
(portUnification), at step 2 they dial TLS and still accept plain text, from
step 3 on TLS only. Each step's servers understand the previous step's. */}}
{{- $step := int $t.migration }}
{{- $lines = append $lines (printf "sslQuorum=%t" (ne $step 1)) }}
{{- if has $step (list 1 2) }}
{{- $lines = append $lines "portUnification=true" }}
{{- end }}
{{- $lines = concat $lines (list
  "ssl.quorum.keyStore.location=/zk-tls-keystore/keystore.pem"
  "ssl.quorum.keyStore.type=PEM"
  "ssl.quorum.trustStore.location=/zk-tls/ca.crt"
  "ssl.quorum.trustStore.type=PEM"
  "ssl.quorum.hostnameVerification=false") }}
{{- end }}
{{- join " " $lines }}
{{- end }}

{{/*
ZooKeeper connect string for the daemon (ELECTION_ZK_SERVERS): every server of
the bundled ensemble by its stable pod DNS name, or the external list.
Names are relative to the release namespace (resolved through the pod's DNS
search path), so rendered manifests can be moved to another namespace.
*/}}
{{- define "election.zkServers" -}}
{{- if .Values.zookeeper.enabled }}
{{- $zk := include "election.zookeeper.fullname" . }}
{{- $headless := include "election.zookeeper.headless" . }}
{{- $servers := list }}
{{- range $i := until (int .Values.zookeeper.replicas) }}
{{- $servers = append $servers (printf "%s-%d.%s:%d" $zk $i $headless (include "election.zookeeper.clientPort" $ | int)) }}
{{- end }}
{{- join "," $servers }}
{{- else }}
{{- join "," .Values.zookeeper.servers }}
{{- end }}
{{- end }}

{{/*
Server list of the bundled ensemble in the official image's ZOO_SERVERS form:
"server.<myid>=<host>:2888:3888;2181 ...", myid = pod ordinal + 1. With TLS
the plain client port listens on loopback only (for the probes' `ruok` and
`srvr`; during a migration on all addresses); clients use the TLS port.
*/}}
{{- define "election.zookeeper.zooServers" -}}
{{- $zk := include "election.zookeeper.fullname" . }}
{{- $headless := include "election.zookeeper.headless" . }}
{{- $servers := list }}
{{- range $i := until (int .Values.zookeeper.replicas) }}
{{- $servers = append $servers (printf "server.%d=%s-%d.%s:2888:3888;%s2181" (add $i 1) $zk $i $headless (ternary "" "127.0.0.1:" (eq (include "election.zookeeper.plainOpen" $) "true"))) }}
{{- end }}
{{- join " " $servers }}
{{- end }}

{{/*
Election path in ZooKeeper: the configured one, or /election/<fullname>.
*/}}
{{- define "election.zkRoot" -}}
{{- default (printf "/election/%s" (include "election.fullname" .)) .Values.election.zkRoot }}
{{- end }}

{{/*
A humantime duration ("1m30s", "250ms") in whole milliseconds. The schema
guarantees the form; units below a millisecond count as zero.
*/}}
{{- define "election.durationMs" -}}
{{- $ms := dict "ns" 0 "nsec" 0 "us" 0 "usec" 0 "ms" 1 "msec" 1 "s" 1000 "sec" 1000 "secs" 1000 "second" 1000 "seconds" 1000 "m" 60000 "min" 60000 "mins" 60000 "minute" 60000 "minutes" 60000 "h" 3600000 "hr" 3600000 "hrs" 3600000 "hour" 3600000 "hours" 3600000 "d" 86400000 "day" 86400000 "days" 86400000 -}}
{{- $total := 0 -}}
{{- range regexFindAll "[0-9]+\\s*[a-z]+" (toString .) -1 -}}
{{- $n := regexFind "^[0-9]+" . | int -}}
{{- $unit := regexReplaceAll "^[0-9]+\\s*" . "" -}}
{{- $total = add $total (mul $n (get $ms $unit | int)) -}}
{{- end -}}
{{- $total -}}
{{- end }}

{{/*
PromQL label matchers of this release's election series (without braces).
*/}}
{{- define "election.metricsSelector" -}}
{{- default (printf "namespace=%q,job=\"%s-headless\"" .Release.Namespace (include "election.fullname" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/*
A Kubernetes memory quantity ("512Mi", "1Gi", "1G", "536870912") in whole
MiB, rounded down. Fails on a form it cannot read.
*/}}
{{- define "election.quantityMi" -}}
{{- $q := toString . }}
{{- $factor := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 }}
{{- if not (regexMatch `^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$` $q) }}
{{- fail (printf "cannot read the memory quantity %q: use a number with an optional Ki, Mi, Gi, Ti, k, M, G or T suffix" $q) }}
{{- end }}
{{- $number := regexFind `^[0-9]+(\.[0-9]+)?` $q }}
{{- $unit := trimPrefix $number $q }}
{{- divf (mulf (float64 $number) (get $factor $unit)) 1048576.0 | floor | int }}
{{- end }}

{{/*
storageClassName value of a claim: "" for "-" (no dynamic provisioning), the
quoted class otherwise, nothing when empty (the cluster's default class).
*/}}
{{- define "election.storageClassName" -}}
{{- if eq "-" (toString .) }}
{{- `""` }}
{{- else if . }}
{{- . | quote }}
{{- end }}
{{- end }}

{{/*
Checks of values that the schema cannot express. Fails the render with a
message that says what to change.
*/}}
{{- define "election.validate" -}}
{{- $fullname := include "election.fullname" . }}
{{- if gt (len $fullname) 42 }}
{{- fail (printf "the full name %q is %d characters long; at most 42 fit StatefulSet pod and label limits: set fullnameOverride" $fullname (len $fullname)) }}
{{- end }}
{{- if and (not .Values.zookeeper.enabled) (empty .Values.zookeeper.servers) }}
{{- fail "zookeeper.enabled is false: list the external ZooKeeper servers in zookeeper.servers (host:port)" }}
{{- end }}
{{- if and .Values.zookeeper.auth.superDigestSecret (not .Values.zookeeper.enabled) }}
{{- fail "zookeeper.auth.superDigestSecret configures the bundled ZooKeeper; an external ensemble's super identity is set on its servers" }}
{{- end }}
{{- if and (ne (int .Values.zookeeper.tls.migration) 0) (not (and .Values.zookeeper.enabled .Values.zookeeper.tls.enabled)) }}
{{- fail "zookeeper.tls.migration steps the bundled ensemble from plain text to TLS: it needs zookeeper.enabled and zookeeper.tls.enabled (an external ensemble's ports are in zookeeper.servers)" }}
{{- end }}
{{- if and .Values.persistence.existingClaim (eq .Values.persistence.mode "perReplica") }}
{{- fail "persistence.existingClaim only works with persistence.mode=shared" }}
{{- end }}
{{- if .Values.zookeeper.enabled }}
{{- /* The lease logic assumes that a follower cut off from the ZooKeeper
leader (which keeps answering pings for up to syncLimit x tickTime) cannot
outlive the session timeout the servers actually grant: the requested one
clamped to [2, 20] x tickTime. */}}
{{- $tick := int .Values.zookeeper.tickTime }}
{{- $syncMs := mul (int .Values.zookeeper.syncLimit) $tick }}
{{- $sessionMs := include "election.durationMs" .Values.election.zkSessionTimeout | int }}
{{- /* The servers clamp a requested timeout to [minSessionTimeout,
maxSessionTimeout], by default [2, 20] x tickTime; extraConfig may set either. */}}
{{- $minMs := mul 2 $tick }}
{{- $maxMs := mul 20 $tick }}
{{- range .Values.zookeeper.extraConfig }}
{{- if regexMatch "^minSessionTimeout=" . }}
{{- $minMs = regexReplaceAll "^minSessionTimeout=" . "" | int }}
{{- else if regexMatch "^maxSessionTimeout=" . }}
{{- $maxMs = regexReplaceAll "^maxSessionTimeout=" . "" | int }}
{{- end }}
{{- end }}
{{- $grantedMs := min (max $sessionMs $minMs) $maxMs }}
{{- if ge $syncMs $grantedMs }}
{{- fail (printf "zookeeper.syncLimit x zookeeper.tickTime (%d x %dms = %dms) must be shorter than the ZooKeeper session timeout (election.zkSessionTimeout %s, granted as %dms after clamping to [minSessionTimeout %dms, maxSessionTimeout %dms]): a follower cut off from the ZooKeeper leader could vouch for an expired session. Lower zookeeper.syncLimit or zookeeper.tickTime, or raise election.zkSessionTimeout (and maxSessionTimeout in zookeeper.extraConfig, if set)" (int .Values.zookeeper.syncLimit) $tick $syncMs .Values.election.zkSessionTimeout $grantedMs $minMs $maxMs) }}
{{- end }}
{{- /* An even ensemble needs a larger quorum and tolerates no more failed
servers than the odd one below it (4 servers: quorum 3, one failure). */}}
{{- $servers := int .Values.zookeeper.replicas }}
{{- if eq (mod $servers 2) 0 }}
{{- fail (printf "zookeeper.replicas is %d: an even ensemble tolerates no more failed servers than %d servers do, and needs a larger quorum (%d); use an odd number (1, 3, 5, 7)" $servers (sub $servers 1) (add (div $servers 2) 1)) }}
{{- end }}
{{- /* The JVM needs memory beyond its heap: GC structures grow with the heap
(G1: 18% of a 256 MiB heap, measured), thread stacks, metaspace, code cache
and Netty's direct buffers do not (33 MiB idle, measured; more under load).
Below the limit the kernel kills the server (OOMKilled), not the JVM. */}}
{{- with (.Values.zookeeper.resources.limits | default dict).memory }}
{{- $limitMi := include "election.quantityMi" . | int }}
{{- $heapMi := int $.Values.zookeeper.heapMb }}
{{- $needMi := add $heapMi (div $heapMi 4) 96 }}
{{- if gt $needMi $limitMi }}
{{- fail (printf "zookeeper.heapMb (%d MiB) does not fit zookeeper.resources.limits.memory (%s = %d MiB): the JVM needs the heap plus a quarter of it (GC structures) plus 96 MiB (threads, metaspace, code cache, direct buffers) = %d MiB. Lower zookeeper.heapMb to at most %d or raise the limit to at least %dMi" $heapMi (toString .) $limitMi $needMi (div (mul (sub $limitMi 96) 4) 5) $needMi) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The daemon's lower bounds (src/config/bounds.rs): it exits 2 below them. */}}
{{- range $key, $minMs := dict "leaderTimeout" 100 "attempterTimeout" 100 "zkSessionTimeout" 1000 "zkConnectTimeout" 100 "failoverMaxBackoff" 100 "releaseTimeout" 100 "childStopTimeout" 1 }}
{{- $value := get $.Values.election $key }}
{{- if lt (include "election.durationMs" $value | int) $minMs }}
{{- fail (printf "election.%s (%s) must be at least %dms: the daemon refuses less" $key $value $minMs) }}
{{- end }}
{{- end }}
{{- $releaseMs := include "election.durationMs" .Values.election.releaseTimeout | int }}
{{- if lt (mul (int .Values.terminationGracePeriodSeconds) 1000) (add $releaseMs 5000) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed election.releaseTimeout (%s) by at least 5 seconds, or the kubelet kills the daemon during its release" (int .Values.terminationGracePeriodSeconds) .Values.election.releaseTimeout) }}
{{- end }}
{{- with .Values.election.command }}
{{- if $.Values.persistence.existingClaim }}
{{- fail "persistence.existingClaim is the leader files' volume: with election.command the leader writes no files and the chart mounts no claim; unset it" }}
{{- end }}
{{- /* The preStop release stops the command first (SIGTERM, SIGKILL after
childStopTimeout), then gives up the node; SIGTERM after it must find the
daemon still within the grace period. */}}
{{- $stopMs := include "election.durationMs" $.Values.election.childStopTimeout | int }}
{{- if lt (mul (int $.Values.terminationGracePeriodSeconds) 1000) (add $stopMs $releaseMs 5000) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed election.childStopTimeout (%s) + election.releaseTimeout (%s) by at least 5 seconds when election.command is set, or the kubelet kills the pod while its command stops or the daemon releases" (int $.Values.terminationGracePeriodSeconds) $.Values.election.childStopTimeout $.Values.election.releaseTimeout) }}
{{- end }}
{{- end }}
{{- include "election.liveChecks" . }}
{{- end }}

{{/*
The Secret holding the replicas' ZooKeeper credentials (`user:password`).
*/}}
{{- define "election.zkAuthSecret" -}}
{{- default (printf "%s-zk-auth" (include "election.fullname" .)) .Values.zookeeper.auth.existingSecret }}
{{- end }}

{{/*
Common fields of the `helm test` containers (kubectl, no shell).
*/}}
{{- define "election.test.container" -}}
env:
  # kubectl keeps its discovery cache under $HOME.
  - name: HOME
    value: /tmp
resources:
  requests:
    cpu: 10m
    memory: 32Mi
  limits:
    memory: 128Mi
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
Whether the ValidatingAdmissionPolicy is rendered: wanted, pod
labelling on, and the API server serves admissionregistration.k8s.io/v1
ValidatingAdmissionPolicy (Kubernetes >= 1.30). Prints "true" or nothing.
*/}}
{{- define "election.admissionPolicy" -}}
{{- if and .Values.kubernetes.labelPod .Values.kubernetes.admissionPolicy.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") -}}
true
{{- end -}}
{{- end }}

{{/*
Name of the cluster-scoped ValidatingAdmissionPolicy and its binding:
<namespace>-<fullname>-pods, unique per namespace and release; with
kubernetes.admissionPolicy.anyNamespace <fullname>-pods, the same objects
for every namespace the rendered bundle is moved to.
*/}}
{{- define "election.admissionPolicyName" -}}
{{- if .Values.kubernetes.admissionPolicy.anyNamespace }}
{{- printf "%s-pods" (include "election.fullname" .) }}
{{- else }}
{{- printf "%s-%s-pods" .Release.Namespace (include "election.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The election pods' selector as a label-selector string (k=v,k=v).
*/}}
{{- define "election.selectorString" -}}
{{- $sel := list }}
{{- range $k, $v := (include "election.selectorLabels" . | fromYaml) }}
{{- $sel = append $sel (printf "%s=%s" $k $v) }}
{{- end }}
{{- join "," $sel }}
{{- end }}

{{/*
Whether rollouts go leader last (rollout.strategy=leaderLast: an OnDelete
StatefulSet and the rollout hook). Needs the pod labels, which tell the hook
who leads. Prints "true" or nothing.
*/}}
{{- define "election.leaderLast" -}}
{{- if and (eq .Values.rollout.strategy "leaderLast") .Values.kubernetes.labelPod -}}
true
{{- end }}
{{- end }}
