# A VirusTotal v3 file or IP address report in, a STIX 2.1 bundle out. Identifiers are UUIDv5 over
# the object's contributing properties (stix_id), so the same report always gives the same bundle.

def vt_confidence:
  # Share of engines with a verdict that call it malicious (suspicious counts half), 0-100.
  (.malicious // 0 | num) as $m | (.suspicious // 0 | num) as $s
  | ((.harmless // 0 | num) + (.undetected // 0 | num) + $m + $s) as $n
  | if $n == 0 then 0 else (($m + $s / 2) * 100 / $n | round) end;

.data as $d
| ($d.attributes // {}) as $a
| ($a.last_analysis_stats // {}) as $stats
| (($stats.malicious // 0) | num) as $malicious
| ($a.last_analysis_date // $a.last_modification_date // $a.last_submission_date | iso) as $seen
| (if $d.type == "file" then
     {
       type: "file",
       spec_version: "2.1",
       hashes: ({"MD5": $a.md5, "SHA-1": $a.sha1, "SHA-256": ($a.sha256 // $d.id)} | with_entries(select(.value != null))),
       size: ($a.size | int),
       name: ($a.meaningful_name // ($a.names // [])[0])
     }
     | .id = ({hashes: .hashes} | stix_id("file"))
   elif $d.type == "ip_address" then
     ($d.id | if test(":") then "ipv6-addr" else "ipv4-addr" end) as $t
     | {type: $t, spec_version: "2.1", value: $d.id, id: ({value: $d.id} | stix_id($t))}
   else
     error("`data.type` is `\($d.type)`: this mapping reads file and ip_address reports")
   end) as $observable
| ([$a.asn | int | select(. != null)] | map({type: "autonomous-system", spec_version: "2.1", number: ., name: $a.as_owner, id: ({number: .} | stix_id("autonomous-system"))})) as $as
| ($observable + (if ($as | length) > 0 then {belongs_to_refs: [$as[0].id]} else {} end)) as $observable
| (if $d.type == "file" then "[file:hashes.'SHA-256' = '\($observable.hashes["SHA-256"])']"
   else "[\($observable.type):value = '\($d.id)']" end) as $pattern
| [
    select($malicious > 0 and $seen != null)
    | {
        type: "indicator",
        spec_version: "2.1",
        id: ({pattern: $pattern, source: "virustotal"} | stix_id("indicator")),
        created: $seen,
        modified: $seen,
        name: ($a.popular_threat_classification.suggested_threat_label // "VirusTotal: \($malicious) engines flag \($d.id)"),
        description: "\($malicious) of \(($stats | [.harmless, .malicious, .suspicious, .undetected] | map(num // 0) | add)) engines flag it as malicious; reputation \($a.reputation // 0).",
        indicator_types: ["malicious-activity"],
        pattern: $pattern,
        pattern_type: "stix",
        valid_from: $seen,
        confidence: ($stats | vt_confidence),
        labels: ($a.tags // [])
      }
    | if .labels == [] then del(.labels) else . end
  ] as $indicators
| {
    type: "bundle",
    id: ({observable: $observable.id, seen: $seen} | stix_id("bundle")),
    # The indicator's pattern names the observable; STIX 2.1 defines no indicator-to-observable
    # relationship, so none is added.
    objects: ([$observable] + $as + $indicators)
  }
| .objects |= map(with_entries(select(.value != null)))
