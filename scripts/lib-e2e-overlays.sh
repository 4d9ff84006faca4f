#!/usr/bin/env bash
# Step 9 of scripts/e2e-k8s.sh, in a file of its own: manifests/ under two
# kustomize overlays that set nothing but `namespace:` (tenant-a, tenant-b),
# applied to the real API server. Sourced, not run; expects from its caller
# kc (admin kubectl), log, die, note, $WORK, $SERVER and $CA.
#
# What it proves (issue 17, items 1 and 12):
#   - both overlays apply (`kubectl apply --server-side -k`), and the
#     cluster-scoped policy objects they carry are the same two objects: no
#     collision, one copy guarding both namespaces;
#   - in each namespace, a token of the replicas' ServiceAccount bound to
#     election-0 may label its own pod (200) and is refused when it changes
#     a sibling's image (403 with the policy's message), although the Role
#     lets it patch that sibling;
#   - a tenant-a replica's token cannot patch a tenant-b pod (403, RBAC).

# PATCH a pod with a bearer token: overlay_patch TOKEN NAMESPACE/POD BODY
# [merge|strategic]; prints the HTTP status, the response in $WORK/overlay-patch.out.
overlay_patch() {
  local type=application/merge-patch+json
  [[ ${4:-merge} == strategic ]] && type=application/strategic-merge-patch+json
  curl -sS -o "$WORK/overlay-patch.out" -w '%{http_code}' --cacert "$CA" -X PATCH \
    -H "Authorization: Bearer $1" -H "Content-Type: $type" \
    --data "$3" "$SERVER/api/v1/namespaces/${2%/*}/pods/${2#*/}"
}

# overlay_expect WANT TOKEN NAMESPACE/POD BODY TYPE [MESSAGE]
overlay_expect() {
  local want=$1 code
  code=$(overlay_patch "$2" "$3" "$4" "$5")
  [[ $code == "$want" ]] || die "PATCH ($5) pod $3 $4: HTTP $code, expected $want: $(cat "$WORK/overlay-patch.out")"
  [[ -z "${6:-}" ]] || grep -qF -- "$6" "$WORK/overlay-patch.out" \
    || die "PATCH pod $3 $4: $code, but not with '$6': $(cat "$WORK/overlay-patch.out")"
  printf '   PATCH (%s) pod %-22s %-70s -> %s %s\n' "$5" "$3" "$4" "$code" \
    "$(python3 -c 'import json,sys; m=json.load(open(sys.argv[1])).get("message",""); print(m.split("denied request: ")[-1][:90])' "$WORK/overlay-patch.out" 2>/dev/null || true)"
}

# A token of the ServiceAccount `election` of NAMESPACE bound to POD, as the
# kubelet projects it (waits for the StatefulSet controller to create the pod).
pod_created() { [[ -n "$(kc -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}' 2>/dev/null)" ]]; } # namespace pod
overlay_pod_token() { # namespace pod
  local uid
  wait_until 60 0.3 pod_created "$1" "$2" || die "pod $1/$2 not created within 60 s"
  uid=$(kc -n "$1" get pod "$2" -o jsonpath='{.metadata.uid}')
  kc -n "$1" create token election --duration 10m --bound-object-kind Pod --bound-object-name "$2" --bound-object-uid "$uid"
}

# The cluster-scoped objects of a kustomize build, without the namespace
# kustomize may write into them (it does not know their kinds are cluster-scoped).
overlay_policy_objects() { # build.yaml
  python3 - "$1" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
out = []
for d in docs:
    if d["kind"] in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        d["metadata"].pop("namespace", None)
        out.append(d)
print(json.dumps(out, sort_keys=True))
PY
}

e2e_namespace_overlays() { # manifests-dir
  local manifests=$1 ns overlay t0 token other names
  for ns in tenant-a tenant-b; do
    overlay=$WORK/overlays/$ns
    mkdir -p "$overlay"
    # kustomize takes a base only by a relative path.
    printf 'resources: [%s]\nnamespace: %s\n' "$(realpath --relative-to="$overlay" "$manifests")" "$ns" >"$overlay/kustomization.yaml"
    kc kustomize "$overlay" >"$WORK/overlay-$ns.yaml" || die "kubectl kustomize $overlay failed"
    t0=$(now_ms)
    kc apply --server-side -k "$overlay" >"$WORK/overlay-apply-$ns.out" 2>&1 \
      || die "kubectl apply --server-side -k (namespace: $ns over manifests/) failed: $(cat "$WORK/overlay-apply-$ns.out")"
    log "kubectl apply --server-side -k {resources: [manifests/], namespace: $ns}: $(grep -c . "$WORK/overlay-apply-$ns.out") objects in $(($(now_ms) - t0)) ms"
  done
  [[ "$(overlay_policy_objects "$WORK/overlay-tenant-a.yaml")" == "$(overlay_policy_objects "$WORK/overlay-tenant-b.yaml")" ]] \
    || die "the two overlays carry different cluster-scoped policy objects: they would overwrite each other"
  names=$(python3 -c 'import json,sys; print(" ".join(sorted(d["kind"]+"/"+d["metadata"]["name"] for d in json.loads(sys.argv[1]))))' \
    "$(overlay_policy_objects "$WORK/overlay-tenant-a.yaml")")
  for n in $names; do
    kc get "${n%%/*}.admissionregistration.k8s.io" "${n#*/}" -o name >/dev/null || die "$n is not on the API server"
  done
  note "namespace overlays tenant-a and tenant-b over manifests/: both applied; their cluster-scoped objects are the same ($names), one copy for both"
  for ns in tenant-a tenant-b; do
    token=$(overlay_pod_token "$ns" election-0)
    overlay_pod_token "$ns" election-1 >/dev/null
    [[ "$(kc -n "$ns" get rolebinding election -o jsonpath='{.subjects[0].namespace}')" == "$ns" ]] \
      || die "the RoleBinding in $ns does not name $ns's ServiceAccount"
    log "namespace $ns: a token of ServiceAccount $ns/election bound to pod election-0"
    overlay_expect 200 "$token" "$ns/election-0" '{"metadata":{"labels":{"election-state":"attempter"}}}' merge
    overlay_expect 403 "$token" "$ns/election-1" \
      '{"spec":{"containers":[{"name":"election","image":"registry.example/evil:1"}]}}' strategic "may not change a pod's spec"
    overlay_expect 403 "$token" "$ns/election-0" \
      '{"spec":{"containers":[{"name":"election","image":"registry.example/evil:1"}]}}' strategic "may not change a pod's spec"
    overlay_expect 403 "$token" "$ns/election-1" '{"metadata":{"labels":{"election-state":"leader"}}}' merge \
      "may only change election-state from leader to stale"
    other=tenant-b
    [[ $ns == tenant-b ]] && other=tenant-a
    overlay_expect 403 "$token" "$other/election-1" '{"metadata":{"labels":{"election-state":"stale"}}}' merge \
      'cannot patch resource \"pods\"'
    note "namespace overlay $ns (namespace: only): election-0's own token labels its own pod (200), is refused a sibling's image and its own (403, the policy), a sibling's label (403, the policy) and a pod of the other tenant (403, RBAC)"
  done
}
