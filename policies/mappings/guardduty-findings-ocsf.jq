# One GuardDuty finding in, one OCSF Detection Finding (class 2004) out.

# GuardDuty severity (1.0-10.0: low below 4, medium below 7, high below 9) -> OCSF severity_id.
def gd_severity_id: num | if . == null then 0 elif . < 4 then 2 elif . < 7 then 3 elif . < 9 then 4 else 5 end;

# The remote side of the action, whatever its type.
def gd_remote: .service.action // {} | [.[] | objects | .remoteIpDetails // empty] | first // null;

. as $f
| ($f.service // {}) as $svc
| (($svc.count | int) // 1) as $count
| ($f.type // "" | split(":") | .[0]) as $purpose
| ($f | gd_remote) as $remote
| (if ($svc.archived | bool) then 3 elif $count > 1 then 2 else 1 end) as $activity
| {
    class_uid: 2004,
    class_name: "Detection Finding",
    category_uid: 2,
    category_name: "Findings",
    activity_id: $activity,
    activity_name: {"1": "Create", "2": "Update", "3": "Close"}[$activity | tostring],
    type_uid: (200400 + $activity),
    time: ($f.updatedAt // $f.createdAt | ms),
    severity_id: ($f.severity | gd_severity_id),
    risk_score: ($f.severity | num | if . then . * 10 | floor else null end),
    status_id: (if ($svc.archived | bool) then 5 else 1 end),
    status: (if ($svc.archived | bool) then "Archived" else "Active" end),
    count: $count,
    is_alert: true,
    message: $f.title,
    start_time: ($svc.eventFirstSeen | ms),
    end_time: ($svc.eventLastSeen | ms),
    cloud: {provider: "AWS", region: $f.region, account: {uid: $f.accountId, type_id: 10, type: "AWS Account"}},
    metadata: {
      version: "1.8.0",
      product: {name: "GuardDuty", vendor_name: "AWS", version: $f.schemaVersion},
      uid: $f.id,
      tenant_uid: $f.accountId,
      modified_time: ($f.updatedAt | ms)
    },
    finding_info: {
      uid: $f.id,
      uid_alt: $f.arn,
      title: $f.title,
      desc: $f.description,
      types: [$f.type],
      created_time: ($f.createdAt | ms),
      modified_time: ($f.updatedAt | ms),
      first_seen_time: ($svc.eventFirstSeen | ms),
      last_seen_time: ($svc.eventLastSeen | ms),
      # The threat purpose before the colon names an ATT&CK tactic for some finding types.
      attacks: [$purpose | mitre_tactic | select(.) | {tactic: .}]
    },
    resources: [
      ($f.resource // {}) as $r
      | ($r.instanceDetails | select(.) | {type: "AWS::EC2::Instance", uid: .instanceId, name: ([.tags[]? | select(.key == "Name") | .value] | first // null), region: $f.region}),
      ($r.accessKeyDetails | select(.) | {type: "AWS::IAM::AccessKey", uid: .accessKeyId, name: .userName, region: $f.region}),
      (($r.s3BucketDetails // [])[] | {type: "AWS::S3::Bucket", uid: .arn, name: .name, region: $f.region})
    ],
    device: (
      $f.resource.instanceDetails | if . == null then null else {
        type_id: 6,
        type: "Virtual",
        uid: .instanceId,
        instance_uid: .instanceId,
        ip: (.networkInterfaces[0].privateIpAddress? // null),
        vpc_uid: (.networkInterfaces[0].vpcId? // null),
        subnet_uid: (.networkInterfaces[0].subnetId? // null),
        region: $f.region
      } end
    ),
    actor: {
      user: ($f.resource.accessKeyDetails | if . == null then null else {name: .userName, uid: .principalId, type: .userType, credential_uid: .accessKeyId} end)
    },
    evidences: [
      ($svc.action.dnsRequestAction | select(.) | {query: {hostname: .domain}, connection_info: {direction_id: 2, direction: "Outbound", protocol_name: (.protocol | if . then ascii_downcase else null end)}}),
      ($svc.action.awsApiCallAction | select(.) | {api: {operation: .api, service: {name: .serviceName}}}),
      ($remote | select(.) | {
        src_endpoint: {
          ip: (.ipAddressV4 // .ipAddressV6),
          location: {city: .city.cityName, country: .country.countryName},
          autonomous_system: {number: (.organization.asn | int), name: .organization.asnOrg},
          isp: .organization.isp
        }
      })
    ]
  }
| prune
| .unmapped = ($f | unmapped([
    "accountId", "arn", "createdAt", "description", "id", "region", "schemaVersion", "severity", "title",
    "type", "updatedAt"
  ]) | if . then
      # jaq's del fails on a path through null (jq's does not): delete only what is there.
      (if .resource.instanceDetails then del(.resource.instanceDetails.instanceId) else . end)
      | (if .resource then del(.resource.accessKeyDetails) else . end)
      | prune
    else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
