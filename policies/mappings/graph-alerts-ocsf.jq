# One Graph alert (alerts_v2) in, one OCSF Detection Finding (class 2004) out.

def evidence(kind): [(.evidence // [])[] | select(.["@odata.type"] == "#microsoft.graph.security." + kind)];

# Graph verdict / classification -> OCSF verdict_id (1 False Positive, 2 True Positive, 4 Suspicious, 5 Benign).
def graph_verdict_id:
  {"falsePositive": 1, "truePositive": 2, "informationalExpectedActivity": 5}[. // ""] // null;

def graph_os_type_id: if (. // "") | test("^windows"; "i") then 100 elif (. // "") | test("linux"; "i") then 200
  elif (. // "") | test("mac"; "i") then 300 elif (. // "") | test("ios"; "i") then 301
  elif (. // "") | test("android"; "i") then 201 else 0 end;

def graph_hashes:
  [
    (.sha1 | select(. != null) | {algorithm_id: 2, algorithm: "SHA-1", value: .}),
    (.sha256 | select(. != null) | {algorithm_id: 3, algorithm: "SHA-256", value: .}),
    (.md5 | select(. != null) | {algorithm_id: 1, algorithm: "MD5", value: .})
  ];

def graph_file:
  if . == null or .fileName == null then null
  else {name: .fileName, path: ((.filePath // "") + "\\" + .fileName), type_id: 1, size: .fileSize, hashes: graph_hashes}
  end;

. as $a
| ({"new": 1, "resolved": 3}[$a.status // ""] // 2) as $activity
| ($a | evidence("deviceEvidence") | first // null) as $dev
| ($a | evidence("userEvidence") | first // null | .userAccount) as $user
| {
    class_uid: 2004,
    class_name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
    activity_id: $activity,
    activity_name: {"1": "Create", "2": "Update", "3": "Close"}[$activity | tostring],
    type_uid: (200400 + $activity),
    time: ($a.lastUpdateDateTime // $a.createdDateTime | ms),
    severity_id: ($a.severity | if . == "unknownFutureValue" then 0 else severity_id end),
    severity: $a.severity,
    status_id: ({"new": 1, "inProgress": 2, "resolved": 4}[$a.status // ""] // 99),
    status: $a.status,
    verdict_id: ($a.classification | graph_verdict_id),
    verdict: $a.classification,
    is_alert: true,
    message: $a.title,
    start_time: ($a.firstActivityDateTime | ms),
    end_time: ($a.lastActivityDateTime | ms),
    assignee: (if $a.assignedTo then {name: $a.assignedTo} else null end),
    remediation: (if $a.recommendedActions then {desc: $a.recommendedActions} else null end),
    metadata: {
      version: "1.8.0",
      product: {name: $a.productName, vendor_name: "Microsoft", feature: {name: $a.serviceSource}},
      uid: $a.id,
      tenant_uid: $a.tenantId,
      correlation_uid: $a.incidentId,
      modified_time: ($a.lastUpdateDateTime | ms)
    },
    finding_info: {
      uid: $a.id,
      uid_alt: $a.providerAlertId,
      title: $a.title,
      desc: $a.description,
      types: [$a.category],
      created_time: ($a.createdDateTime | ms),
      modified_time: ($a.lastUpdateDateTime | ms),
      first_seen_time: ($a.firstActivityDateTime | ms),
      last_seen_time: ($a.lastActivityDateTime | ms),
      src_url: $a.alertWebUrl,
      analytic: (if $a.detectorId then {uid: $a.detectorId, name: $a.detectionSource, type_id: 1, type: "Rule"} else null end),
      attacks: [($a.mitreTechniques // [])[] | {technique: {uid: .}, tactic: ($a.category | mitre_tactic)}]
    },
    device: (
      if $dev == null then null else {
        type_id: 0,
        hostname: $dev.deviceDnsName,
        uid: $dev.mdeDeviceId,
        uid_alt: $dev.azureAdDeviceId,
        ip: ([($dev.ipInterfaces // [])[] | select(. != "127.0.0.1" and . != "::1")] | first // null),
        os: (if $dev.osPlatform then {name: $dev.osPlatform, type_id: ($dev.osPlatform | graph_os_type_id), build: ($dev.osBuild | if . then tostring else null end)} else null end)
      } end
    ),
    actor: {
      user: (
        if $user == null then null else {
          name: $user.accountName,
          uid: ($user.userSid // $user.azureAdUserId),
          uid_alt: $user.azureAdUserId,
          domain: $user.domainName,
          full_name: $user.displayName,
          email_addr: $user.userPrincipalName
        } end
      )
    },
    evidences: [
      ($a | evidence("processEvidence")[] | {
        verdict: .verdict,
        process: {pid: (.processId | int), cmd_line: .processCommandLine, created_time: (.processCreationDateTime | ms),
                  name: .imageFile.fileName, file: (.imageFile | graph_file),
                  parent_process: (if .parentProcessId then {pid: (.parentProcessId | int)} else null end)}
      }),
      ($a | evidence("fileEvidence")[] | {verdict: .verdict, file: (.fileDetails | graph_file)}),
      ($a | evidence("urlEvidence")[] | {verdict: .verdict, url: {url_string: .url}}),
      ($a | evidence("ipEvidence")[] | {verdict: .verdict, src_endpoint: {ip: .ipAddress, location: {country: .countryLetterCode}}}),
      ($a | evidence("mailboxEvidence")[] | {verdict: .verdict, user: {name: .primaryAddress, email_addr: .primaryAddress}})
    ]
  }
| prune
| .unmapped = ($a | unmapped([
    "id", "providerAlertId", "incidentId", "status", "severity", "classification", "serviceSource",
    "detectionSource", "productName", "detectorId", "tenantId", "title", "description", "recommendedActions",
    "category", "assignedTo", "alertWebUrl", "mitreTechniques", "createdDateTime", "lastUpdateDateTime",
    "firstActivityDateTime", "lastActivityDateTime", "evidence"
  ]) | if . then prune else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
