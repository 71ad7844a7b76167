# One Falcon alert record in, one OCSF Detection Finding (class 2004) out.

# A file with its hashes, from a record or its parent_details / grandparent_details.
def cs_file:
  {
    name: (.filename // (.filepath // "" | split("\\") | last)),
    path: .filepath,
    type_id: 1,
    hashes: [
      (.md5 | select(. != null and . != "") | {algorithm_id: 1, algorithm: "MD5", value: .}),
      (.sha1 | select(. != null and . != "" and (test("^0+$") | not)) | {algorithm_id: 2, algorithm: "SHA-1", value: .}),
      (.sha256 | select(. != null and . != "") | {algorithm_id: 3, algorithm: "SHA-256", value: .})
    ]
  }
  | if .name == null or .name == "" then null else . end;

def cs_process:
  {
    pid: (.local_process_id | int),
    uid: .process_id,
    cmd_line: .cmdline,
    name: .filename,
    created_time: (.process_start_time | ms),
    terminated_time: (.process_end_time | ms),
    file: cs_file
  };

# Falcon workflow status -> OCSF finding status_id (1 New, 2 In Progress, 4 Resolved).
def cs_status_id: {"new": 1, "in_progress": 2, "reopened": 2, "closed": 4}[. // ""] // 99;

# Falcon status -> OCSF activity: a new alert is created, a closed one closed, anything else updated.
def cs_activity_id: {"new": 1, "closed": 3}[. // ""] // 2;

# What the sensor did, from pattern_disposition_details (values may be strings).
def cs_disposition_id:
  if . == null then null
  elif (.quarantine_file | bool) then 3
  elif (.process_blocked | bool) or (.operation_blocked | bool) or (.kill_process | bool) then 2
  elif (.detect | bool) then 15
  else 16 end;

def cs_os_type_id: {"Windows": 100, "Linux": 200, "Mac": 300}[. // ""] // 0;

# Falcon product_type_desc -> OCSF device type_id (1 Server, 2 Desktop).
def cs_device_type_id: {"Workstation": 2, "Server": 1, "Domain Controller": 1}[. // ""] // 0;

. as $a
| ($a.status | cs_activity_id) as $activity
| {
    class_uid: 2004,
    class_name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
    activity_id: $activity,
    activity_name: {"1": "Create", "2": "Update", "3": "Close"}[$activity | tostring],
    type_uid: (200400 + $activity),
    time: ($a.timestamp // $a.created_timestamp | ms),
    severity_id: (if $a.severity_name then ($a.severity_name | severity_id) else ($a.severity | score_severity_id) end),
    severity: $a.severity_name,
    confidence_score: ($a.confidence | int),
    status_id: ($a.status | cs_status_id),
    status: $a.status,
    is_alert: true,
    message: ($a.display_name // $a.name),
    disposition_id: ($a.pattern_disposition_details | cs_disposition_id),
    metadata: {
      version: "1.8.0",
      product: {name: "Falcon", vendor_name: "CrowdStrike", feature: {name: $a.product}},
      uid: $a.id,
      tenant_uid: $a.cid,
      correlation_uid: $a.aggregate_id,
      modified_time: ($a.updated_timestamp | ms)
    },
    finding_info: {
      uid: $a.composite_id,
      title: ($a.display_name // $a.name),
      desc: $a.description,
      types: [$a.type],
      created_time: ($a.created_timestamp | ms),
      modified_time: ($a.updated_timestamp | ms),
      src_url: $a.falcon_host_link,
      analytic: (if $a.name then {name: $a.name, type_id: 1, type: "Rule"} else null end),
      attacks: [
        select($a.tactic_id or $a.technique_id)
        | {
            tactic: {name: $a.tactic, uid: $a.tactic_id},
            technique: {name: $a.technique, uid: $a.technique_id}
          }
      ]
    },
    device: (
      $a.device | if . == null then null else {
        type_id: (.product_type_desc | cs_device_type_id),
        type: .product_type_desc,
        uid: .device_id,
        hostname: .hostname,
        ip: .local_ip,
        mac: (.mac_address | if . then gsub("-"; ":") else null end),
        domain: .machine_domain,
        os: (if .platform_name then {name: (.os_version // .platform_name), type_id: (.platform_name | cs_os_type_id)} else null end),
        agent_list: [select(.agent_version) | {name: "Falcon sensor", type_id: 1, version: .agent_version, uid: $a.agent_id}]
      } end
    ),
    actor: {
      user: {name: $a.user_name, uid: $a.user_id, domain: $a.logon_domain}
    },
    evidences: [
      select($a.filename or $a.cmdline)
      | {
          process: ($a | cs_process + {
            parent_process: ($a.parent_details | if . == null then null else cs_process end)
          })
        }
    ]
  }
| prune
| .unmapped = ($a | unmapped([
    "timestamp", "created_timestamp", "updated_timestamp", "severity", "severity_name", "confidence",
    "status", "display_name", "name", "pattern_disposition_details", "product", "id", "cid",
    "aggregate_id", "composite_id", "description", "type", "falcon_host_link", "tactic", "tactic_id",
    "technique", "technique_id", "device", "user_name", "user_id", "logon_domain", "filename",
    "filepath", "cmdline", "local_process_id", "process_id", "md5", "sha1", "sha256", "parent_details",
    "process_start_time", "process_end_time"
  ]) | if . then prune else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
