# One SentinelOne threat in, one OCSF Detection Finding (class 2004) out.

# SentinelOne classification -> OCSF malware classification_ids.
def s1_malware_class_id:
  {"adware": 1, "backdoor": 2, "bot": 3, "bootkit": 4, "downloader": 6, "dropper": 7, "exploit": 8,
   "keylogger": 9, "ransomware": 10, "rat": 11, "remote access trojan": 11, "miner": 12, "rootkit": 14,
   "spyware": 16, "trojan": 17, "virus": 18, "webshell": 19, "wiper": 20, "worm": 21}[ascii_downcase] // 99;

def s1_os_type_id: {"windows": 100, "linux": 200, "macos": 300}[. // ""] // 0;
def s1_device_type_id: {"server": 1, "desktop": 2, "laptop": 3, "kubernetes node": 6}[. // ""] // 0;

. as $t
| ($t.threatInfo // {}) as $i
| ($t.agentRealtimeInfo // {}) as $rt
| ($t.agentDetectionInfo // {}) as $det
| ({"unresolved": 1, "resolved": 3}[$i.incidentStatus // ""] // 2) as $activity
| {
    class_uid: 2004,
    class_name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
    activity_id: $activity,
    activity_name: {"1": "Create", "2": "Update", "3": "Close"}[$activity | tostring],
    type_uid: (200400 + $activity),
    time: ($i.updatedAt // $i.createdAt | ms),
    # SentinelOne has no severity: a malicious verdict is High, suspicious Medium.
    severity_id: ({"malicious": 4, "suspicious": 3}[$i.confidenceLevel // ""] // 0),
    confidence: $i.confidenceLevel,
    confidence_id: ({"malicious": 3, "suspicious": 2}[$i.confidenceLevel // ""] // 0),
    status_id: ({"unresolved": 1, "in_progress": 2, "resolved": 4}[$i.incidentStatus // ""] // 99),
    status: $i.incidentStatus,
    status_detail: $i.mitigationStatusDescription,
    verdict_id: ({"true_positive": 2, "false_positive": 1, "suspicious": 4}[$i.analystVerdict // ""] // 0),
    verdict: $i.analystVerdict,
    disposition_id: (
      [($t.mitigationStatus // [])[] | select(.status == "success") | .action] as $done
      | if ($done | index(["quarantine"])) then 3 elif ($done | index(["kill"])) then 2
        elif $i.mitigationStatus == "not_mitigated" then 15 else null end
    ),
    is_alert: true,
    message: $i.threatName,
    metadata: {
      version: "1.8.0",
      product: {name: "Singularity", vendor_name: "SentinelOne"},
      uid: $t.id,
      tenant_uid: $det.accountId,
      correlation_uid: $i.storyline,
      modified_time: ($i.updatedAt | ms)
    },
    finding_info: {
      uid: ($i.threatId // $t.id),
      title: $i.threatName,
      types: [$i.classification],
      created_time: ($i.createdAt | ms),
      modified_time: ($i.updatedAt | ms),
      first_seen_time: ($i.identifiedAt | ms),
      attacks: [
        ($t.indicators // [])[] | (.tactics // [])[] | select(.source == "MITRE") as $tac
        | ($tac.techniques // [])[]
        | {tactic: ($tac.name | mitre_tactic), technique: {uid: .name, src_url: .link}}
      ]
    },
    malware: [
      select($i.classification != null)
      | {name: $i.threatName, classifications: [$i.classification], classification_ids: [$i.classification | s1_malware_class_id]}
    ],
    device: (
      if $rt.agentComputerName == null then null else {
        type_id: ($rt.agentMachineType | s1_device_type_id),
        type: $rt.agentMachineType,
        hostname: $rt.agentComputerName,
        uid: $rt.agentId,
        uid_alt: $rt.agentUuid,
        ip: $det.agentIpV4,
        domain: $det.agentDomain,
        os: (if $rt.agentOsType then {name: ($det.agentOsName // $rt.agentOsType), type_id: ($rt.agentOsType | s1_os_type_id)} else null end),
        agent_list: [select($rt.agentVersion) | {name: "SentinelOne agent", type_id: 1, version: $rt.agentVersion, uid: $rt.agentUuid}]
      } end
    ),
    evidences: [
      select($i.filePath or $i.processUser)
      | {
          file: (
            if $i.filePath == null then null else {
              name: ($i.filePath | split("/") | last | split("\\") | last),
              path: $i.filePath,
              type_id: 1,
              size: ($i.fileSize | int),
              ext: ($i.fileExtension | if . then ascii_downcase else null end),
              hashes: [
                ($i.md5 | select(.) | {algorithm_id: 1, algorithm: "MD5", value: .}),
                ($i.sha1 | select(.) | {algorithm_id: 2, algorithm: "SHA-1", value: .}),
                ($i.sha256 | select(.) | {algorithm_id: 3, algorithm: "SHA-256", value: .})
              ]
            } end
          ),
          # OCSF needs a pid for a process; SentinelOne names the originating process only (kept in unmapped).
          user: (if $i.processUser then {name: $i.processUser} else null end)
        }
    ]
  }
| prune
| .unmapped = ($i | unmapped([
    "analystVerdict", "classification", "confidenceLevel", "createdAt", "fileExtension", "filePath", "fileSize",
    "identifiedAt", "incidentStatus", "md5", "sha1", "sha256", "mitigationStatus", "mitigationStatusDescription",
    "processUser", "storyline", "threatId", "threatName", "updatedAt"
  ]) | if . then prune else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
