# One Okta LogEvent in, one ECS 8.17 document out.
. as $e
| ($e.eventType // "") as $type
| ($e.outcome.result // "") as $result
| {
    "@timestamp": ($e.published | iso),
    message: $e.displayMessage,
    event: {
      kind: "event",
      id: $e.uuid,
      action: $type,
      category: (
        if $type | test("^user\\.(session|authentication)\\.|^policy\\.evaluate_sign_on") then ["authentication", "session"]
        elif $type | test("^user\\.(account|lifecycle|mfa)\\.|^group\\.user_membership") then ["iam"]
        else ["iam"] end
      ),
      type: (
        if $type == "user.session.start" then ["start"]
        elif $type == "user.session.end" then ["end"]
        elif $type | test("lifecycle\\.create") then ["user", "creation"]
        elif $type | test("delete") then ["user", "deletion"]
        elif $type | test("^user\\.(account|lifecycle|mfa)\\.") then ["user", "change"]
        else ["info"] end
      ),
      outcome: ({"SUCCESS": "success", "ALLOW": "success", "FAILURE": "failure", "DENY": "failure"}[$result] // "unknown"),
      reason: $e.outcome.reason,
      severity: ({"DEBUG": 1, "INFO": 2, "WARN": 3, "ERROR": 4}[$e.severity // ""] // null),
      dataset: "okta.system",
      provider: "okta",
      original: ($e | tojson)
    },
    observer: {vendor: "Okta", product: "Okta Identity Cloud", type: "idp"},
    user: (
      ($e.actor // {}) as $actor
      | ([$e.target[]? | select(.type == "User")] | first // null) as $target
      | {
          id: $actor.id,
          name: $actor.alternateId,
          full_name: $actor.displayName,
          email: ($actor.alternateId | if type == "string" and test("^[^@ ]+@[^@ ]+$") then . else null end),
          target: ($target | if . == null then null else {id: .id, name: .alternateId, full_name: .displayName,
            email: (.alternateId | if type == "string" and test("^[^@ ]+@[^@ ]+$") then . else null end)} end)
        }
    ),
    source: ($e.client | if . == null or .ipAddress == null then null else {
      ip: .ipAddress,
      geo: (.geographicalContext | if . == null then null else {
        city_name: .city, region_name: .state, country_name: .country, postal_code: .postalCode,
        location: (.geolocation | if . == null or .lat == null then null else {lat: .lat, lon: .lon} end)
      } end),
      as: ($e.securityContext | if . == null or .asNumber == null then null else {number: .asNumber, organization: {name: .asOrg}} end)
    } end),
    user_agent: ($e.client.userAgent | if . == null then null else {original: .rawUserAgent, os: {name: .os}, name: .browser} end),
    related: {
      ip: [$e.client.ipAddress?, ($e.request.ipChain[]?.ip) | select(.)] | unique,
      user: [$e.actor.alternateId?, ($e.target[]? | select(.type == "User") | .alternateId) | select(.)] | unique
    }
  }
| prune
