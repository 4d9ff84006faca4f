{{/*
Checks of an upgrade against the live objects (`lookup`): changes that
Kubernetes would refuse with a raw error, or accept and break the election
with. `helm template` and `helm lint` have no cluster: lookup finds nothing
and nothing is checked; scripts/e2e-k8s.sh (steps 6d, 6f) tests these on a real
API server.
*/}}
{{- define "election.liveChecks" -}}
{{- $docs := "docs/kubernetes.md, \"Upgrading and operating\"" }}
{{- if .Values.zookeeper.enabled }}
{{- $zk := include "election.zookeeper.fullname" . }}
{{- with lookup "apps/v1" "StatefulSet" $.Release.Namespace $zk }}
{{- /* A running ensemble restarted server by server with another server
list is two ensembles for a while: a 2-of-3 and a 3-of-5 quorum can both
elect a ZooKeeper leader, and an election replica can lead on each side.
A stopped ensemble (0 replicas: the planned stop) starts with one list. */}}
{{- $live := int .spec.replicas }}
{{- $want := int $.Values.zookeeper.replicas }}
{{- if and (ne $live $want) (gt $live 0) (not $.Values.zookeeper.allowResize) }}
{{- fail (printf "zookeeper.replicas: the running ensemble %s has %d servers and this upgrade asks for %d. Restarting them one by one with a different server list lets two quorums with different server lists exist at once (e.g. 2 of the old 3 and 3 of the new 5), each can elect a ZooKeeper leader and an election replica can lead on either side; from 1 server, the new servers can form a new, empty ensemble without it, which loses the election path and the fencing floor. Resize with a planned stop (scale the election and the ZooKeeper StatefulSets to 0, then upgrade: a stopped ensemble starts with one server list), or reconfigure the running servers with ZooKeeper's dynamic reconfiguration and then upgrade with zookeeper.allowResize=true: see %s" $zk $live $want $docs) }}
{{- end }}
{{- $rendered := include "election.claimTemplates" (dict "name" "data" "on" $.Values.zookeeper.persistence.enabled "p" $.Values.zookeeper.persistence "annotations" (dict)) }}
{{- include "election.sameClaimTemplates" (dict "sts" . "rendered" $rendered "values" "zookeeper.persistence" "docs" $docs "ns" $.Release.Namespace) }}
{{- end }}
{{- end }}
{{- $fullname := include "election.fullname" . }}
{{- with lookup "apps/v1" "StatefulSet" $.Release.Namespace $fullname }}
{{- $p := $.Values.persistence }}
{{- $rendered := include "election.claimTemplates" (dict "name" "files" "on" (eq $p.mode "perReplica") "p" $p "annotations" ($p.annotations | default dict)) }}
{{- include "election.sameClaimTemplates" (dict "sts" . "rendered" $rendered "values" "persistence.mode or persistence.*" "docs" $docs "ns" $.Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
The volumeClaimTemplates the chart renders from values, summarised as the
live check compares them: "name: modes, size MiB, class, annotations", or
"none". Input: dict name, on (renders a template), p (persistence values),
annotations.
*/}}
{{- define "election.claimTemplates" -}}
{{- if .on }}
{{- $class := "cluster default" }}
{{- if eq "-" (toString .p.storageClass) }}
{{- $class = "none" }}
{{- else if .p.storageClass }}
{{- $class = .p.storageClass }}
{{- end }}
{{- $ann := list }}
{{- range $k, $v := .annotations }}
{{- $ann = append $ann (printf "%s=%s" $k $v) }}
{{- end }}
{{- printf "%s: %s, %d MiB, class %s, annotations [%s]" .name (join "," .p.accessModes) (include "election.quantityMi" .p.size | int) $class (join "," $ann) }}
{{- else }}
{{- "none" }}
{{- end }}
{{- end }}

{{/*
Fails when a live StatefulSet's volumeClaimTemplates differ from the
rendered summary (election.claimTemplates): Kubernetes forbids changing
them. Input: dict sts (the live object), rendered, values (what the user
changed), docs, ns.
*/}}
{{- define "election.sameClaimTemplates" -}}
{{- $live := list }}
{{- range .sts.spec.volumeClaimTemplates | default list }}
{{- $class := "cluster default" }}
{{- if hasKey .spec "storageClassName" }}
{{- $class = default "none" .spec.storageClassName }}
{{- end }}
{{- $ann := list }}
{{- range $k, $v := (.metadata.annotations | default dict) }}
{{- $ann = append $ann (printf "%s=%s" $k $v) }}
{{- end }}
{{- $live = append $live (printf "%s: %s, %d MiB, class %s, annotations [%s]" .metadata.name (join "," .spec.accessModes) (include "election.quantityMi" .spec.resources.requests.storage | int) $class (join "," $ann)) }}
{{- end }}
{{- $liveText := default "none" (join "; " $live) }}
{{- if ne $liveText .rendered }}
{{- /* A template the live pods have no claim of (shared -> perReplica, a
new name): a new StatefulSet that adopts them would have to change their
volumes, which a pod forbids; its controller fails on the first such pod
and then creates no pod at all, so nothing is replaced. Only pods it
creates itself fit: stop them first. */}}
{{- $liveNames := list }}
{{- range .sts.spec.volumeClaimTemplates | default list }}
{{- $liveNames = append $liveNames .metadata.name }}
{{- end }}
{{- $adds := false }}
{{- if ne .rendered "none" }}
{{- range splitList "; " .rendered }}
{{- if not (has (first (splitList ":" .)) $liveNames) }}
{{- $adds = true }}
{{- end }}
{{- end }}
{{- end }}
{{- $how := printf "delete the StatefulSet but not its pods (kubectl delete statefulset %s --namespace %s --cascade=orphan) and run this upgrade again: the new StatefulSet adopts the running pods, which are then replaced as after any change of their template (rollout.strategy=leaderLast: by the rollout hook, the leader last)" .sts.metadata.name .ns }}
{{- if $adds }}
{{- $how = printf "stop the pods with their StatefulSet (kubectl delete statefulset %s --namespace %s: each replica hands over in its preStop hook, the last leaves no leader) and run this upgrade again, which starts them with the new claims. Orphaning the pods (--cascade=orphan) does not work here: the new StatefulSet would have to give the running pods a claim they do not mount, which a pod forbids, and replaces none of them" .sts.metadata.name .ns }}
{{- end }}
{{- fail (printf "%s: the live StatefulSet %s has the volume claim templates [%s] and this upgrade renders [%s]; Kubernetes refuses to change a StatefulSet's volumeClaimTemplates. To change them, %s. Claims made from the old templates are kept (and not resized); a shared claim the chart no longer renders is deleted by helm, its data too unless its PersistentVolume's reclaim policy is Retain. See %s" .values .sts.metadata.name $liveText .rendered $how .docs) }}
{{- end }}
{{- end }}
