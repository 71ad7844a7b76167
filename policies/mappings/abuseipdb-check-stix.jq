# An AbuseIPDB check response in, a STIX 2.1 bundle out.
.data as $d
| ($d.ipAddress // error("`data.ipAddress` is missing")) as $ip
| (if ($d.ipVersion | int) == 6 or ($ip | test(":")) then "ipv6-addr" else "ipv4-addr" end) as $t
| {type: $t, spec_version: "2.1", id: ({value: $ip} | stix_id($t)), value: $ip} as $observable
| ($d.abuseConfidenceScore | int // 0) as $score
| ($d.lastReportedAt | iso) as $seen
| "[\($t):value = '\($ip)']" as $pattern
| {
    type: "bundle",
    id: ({observable: $observable.id, seen: $seen} | stix_id("bundle")),
    objects: [
      $observable,
      (
        select(($d.totalReports | int // 0) > 0 and $seen != null)
        | {
            type: "indicator",
            spec_version: "2.1",
            id: ({pattern: $pattern, source: "abuseipdb"} | stix_id("indicator")),
            created: $seen,
            modified: $seen,
            name: "AbuseIPDB: \($ip) reported \($d.totalReports) times",
            description: ([("reported by \($d.numDistinctUsers // 0) users"), ($d.usageType | select(.)), ($d.isp | select(.) | "ISP \(.)"), ($d.countryName // $d.countryCode | select(.) | "in \(.)")] | join("; ")),
            indicator_types: [if $score >= 75 then "malicious-activity" else "anomalous-activity" end],
            pattern: $pattern,
            pattern_type: "stix",
            valid_from: $seen,
            confidence: ([[$score, 0] | max, 100] | min),
            labels: ([if ($d.isTor | bool) then "tor" else empty end])
          }
        | if .labels == [] then del(.labels) else . end
      )
    ]
  }
