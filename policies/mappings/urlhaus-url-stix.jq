# A URLhaus URL lookup in, a STIX 2.1 bundle out.
. as $u
| if $u.query_status != "ok" then
    {type: "bundle", id: ({query_status: $u.query_status, url: $u.url} | stix_id("bundle")), objects: []}
  else
    ($u.date_added | iso) as $added
    | {type: "url", spec_version: "2.1", id: ({value: $u.url} | stix_id("url")), value: $u.url} as $observable
    | "[url:value = '\($u.url | gsub("\\\\"; "\\\\\\\\") | gsub("'"; "\\\\'"))']" as $pattern
    | {
        type: "bundle",
        id: ({observable: $observable.id, added: $added} | stix_id("bundle")),
        objects: [
          $observable,
          {
            type: "indicator",
            spec_version: "2.1",
            id: ({pattern: $pattern, source: "urlhaus"} | stix_id("indicator")),
            created: $added,
            modified: $added,
            name: "URLhaus \($u.threat // "malicious URL"): \($u.url)",
            description: "URL status \($u.url_status // "unknown") at lookup; reported by \($u.reporter // "unknown"). \($u.urlhaus_reference // "")",
            indicator_types: ["malicious-activity"],
            pattern: $pattern,
            pattern_type: "stix",
            valid_from: $added,
            # An offline URL is history, not an active threat: lower confidence.
            confidence: (if $u.url_status == "online" then 90 else 50 end),
            labels: ([($u.tags // [])[] | ascii_downcase] | unique),
            external_references: [{source_name: "urlhaus", url: $u.urlhaus_reference, external_id: $u.id} | with_entries(select(.value != null))]
          }
          | if .labels == [] then del(.labels) else . end
        ]
      }
  end
