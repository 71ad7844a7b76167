# One Falcon alert record in, one ECS 8.17 document out.

def cs_hash: {md5: .md5, sha1: (.sha1 | if . and test("^0+$") then null else . end), sha256: .sha256};

. as $a
| ($a.severity_name // null) as $sname
| {
    "@timestamp": ($a.timestamp // $a.created_timestamp | iso),
    message: ($a.description // $a.display_name // $a.name),
    event: {
      kind: "alert",
      category: (if $a.product == "idp" then ["iam"] else ["malware", "intrusion_detection"] end),
      type: ["info"],
      id: $a.composite_id,
      code: $a.type,
      action: $a.pattern_disposition_description,
      # ECS severity is numeric: Falcon's 0-100 score as is, or the middle of the named band.
      severity: (($a.severity | int) // ({"Informational": 10, "Low": 30, "Medium": 50, "High": 70, "Critical": 90}[$sname // ""])),
      risk_score: ($a.severity | num),
      created: ($a.created_timestamp | iso),
      url: $a.falcon_host_link,
      dataset: "crowdstrike.alert",
      provider: "crowdstrike",
      reason: $a.description,
      original: ($a | tojson)
    },
    observer: {vendor: "CrowdStrike", product: "Falcon", type: "edr"},
    organization: {id: $a.cid},
    rule: {name: ($a.display_name // $a.name), id: ($a.pattern_id | if . then tostring else null end), description: $a.description},
    threat: (
      if $a.tactic_id or $a.technique_id then {
        framework: "MITRE ATT&CK",
        tactic: {id: [$a.tactic_id], name: [$a.tactic]},
        technique: {id: [$a.technique_id], name: [$a.technique]}
      } else null end
    ),
    host: ($a.device | if . == null then null else {
      id: .device_id,
      name: .hostname,
      hostname: .hostname,
      domain: .machine_domain,
      ip: [.local_ip, .external_ip],
      mac: [.mac_address | select(.) | ascii_upcase],
      os: {name: (.os_version // .platform_name), platform: (.platform_name | if . then ascii_downcase else null end),
           type: ({"Windows": "windows", "Mac": "macos", "Linux": "linux"}[.platform_name // ""] // null)}
    } end),
    user: {name: $a.user_name, id: $a.user_id, domain: $a.logon_domain},
    process: (
      if $a.filename or $a.cmdline then {
        pid: ($a.local_process_id | int),
        entity_id: $a.process_id,
        name: $a.filename,
        executable: $a.filepath,
        command_line: $a.cmdline,
        start: ($a.process_start_time | iso),
        end: ($a.process_end_time | iso),
        hash: ($a | cs_hash),
        parent: ($a.parent_details | if . == null then null else {
          pid: (.local_process_id | int), name: .filename, executable: .filepath, command_line: .cmdline, hash: cs_hash
        } end)
      } else null end
    ),
    file: (if $a.filename then {name: $a.filename, path: $a.filepath, hash: ($a | cs_hash)} else null end),
    related: {
      hosts: [$a.device.hostname? | select(.)],
      user: [$a.user_name | select(.)],
      hash: [$a.md5, $a.sha256, $a.parent_details.md5?, $a.parent_details.sha256? | select(.)] | unique,
      ip: [$a.device.local_ip?, $a.device.external_ip? | select(.)] | unique
    }
  }
| prune
