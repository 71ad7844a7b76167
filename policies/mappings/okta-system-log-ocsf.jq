# One Okta LogEvent in, one OCSF Authentication (3002) or Account Change (3001) event out.

def okta_user: if . == null then null else {uid: .id, name: .alternateId, full_name: .displayName, type: .type,
  email_addr: (.alternateId | if type == "string" and test("^[^@ ]+@[^@ ]+$") then . else null end)} end;

# Okta severity -> OCSF severity_id.
def okta_severity_id: {"DEBUG": 1, "INFO": 1, "WARN": 3, "ERROR": 4}[. // ""] // 0;

def okta_src_endpoint:
  .client as $c
  | if $c == null or $c.ipAddress == null then null else {
      ip: $c.ipAddress,
      location: ($c.geographicalContext | if . == null then null else {
        city: .city, region: .state, country: .country, postal_code: .postalCode,
        lat: .geolocation.lat?, long: .geolocation.lon?
      } end)
    } end;

# Authenticator name -> OCSF auth factor type_id (5 Push, 7 OTP, 10 WebAuthn, 11 Password...).
def okta_factor_type_id:
  {"Okta Verify": 5, "Google Authenticator": 7, "Security Key or Biometric": 10, "Password": 11,
   "Phone": 1, "SMS": 1, "Email": 8, "Security Question": 2}[. // ""] // 99;

# Account events: eventType -> Account Change activity_id.
def okta_account_activity:
  {
    "user.lifecycle.create": 1, "user.lifecycle.activate": 2, "user.lifecycle.reactivate": 2,
    "user.lifecycle.unsuspend": 2, "user.account.update_password": 3, "user.account.reset_password": 4,
    "user.lifecycle.deactivate": 5, "user.lifecycle.suspend": 5, "user.lifecycle.delete.initiated": 6,
    "user.lifecycle.delete.completed": 6, "user.account.lock": 9, "user.account.lock.limit": 9,
    "user.mfa.factor.activate": 10, "user.mfa.factor.deactivate": 11, "user.mfa.factor.reset_all": 11,
    "user.account.unlock": 12, "user.account.unlock_by_admin": 12
  }[.] // 99;

. as $e
| ($e.eventType // "") as $type
| (($e.outcome.result // "") as $r | {"SUCCESS": 1, "ALLOW": 1, "FAILURE": 2, "DENY": 2}[$r] // (if $r == "" then 0 else 99 end)) as $status_id
| {
    time: ($e.published | ms),
    severity_id: ($e.severity | okta_severity_id),
    severity: $e.severity,
    message: $e.displayMessage,
    status_id: $status_id,
    status: $e.outcome.result,
    status_detail: $e.outcome.reason,
    src_endpoint: ($e | okta_src_endpoint),
    http_request: (if $e.client.userAgent.rawUserAgent? then {user_agent: $e.client.userAgent.rawUserAgent} else null end),
    metadata: {
      version: "1.8.0",
      product: {name: "Okta", vendor_name: "Okta"},
      uid: $e.uuid,
      event_code: $type,
      log_version: $e.version,
      correlation_uid: $e.transaction.id?
    }
  }
+ if ($type | test("^user\\.(session|authentication)\\.")) or $type == "policy.evaluate_sign_on" then
    (if $type == "user.session.end" then 2 else 1 end) as $activity
    | {
        class_uid: 3002,
        class_name: "Authentication",
        category_uid: 3,
        category_name: "Identity & Access Management",
        activity_id: $activity,
        activity_name: {"1": "Logon", "2": "Logoff"}[$activity | tostring],
        type_uid: (300200 + $activity),
        user: ($e.actor | okta_user),
        is_mfa: (if $type | test("mfa") then true else null end),
        is_remote: true,
        service: {name: "Okta"},
        session: (if $e.authenticationContext.externalSessionId? then {uid: $e.authenticationContext.externalSessionId} else null end),
        auth_factors: [$e.target[]? | select(.type == "AuthenticatorEnrollment") | {factor_type: .displayName, factor_type_id: (.displayName | okta_factor_type_id)}]
      }
  elif $type | test("^user\\.(account|lifecycle|mfa\\.factor)\\.") then
    ($type | okta_account_activity) as $activity
    | {
        class_uid: 3001,
        class_name: "Account Change",
        category_uid: 3,
        category_name: "Identity & Access Management",
        activity_id: $activity,
        activity_name: ({"1": "Create", "2": "Enable", "3": "Password Change", "4": "Password Reset", "5": "Disable",
          "6": "Delete", "9": "Lock", "10": "MFA Factor Enable", "11": "MFA Factor Disable", "12": "Unlock"}[$activity | tostring] // "Other"),
        type_uid: (300100 + $activity),
        user: ([$e.target[]? | select(.type == "User")] | first // $e.actor | okta_user),
        actor: {user: ($e.actor | okta_user)}
      }
  else
    error("eventType `\($type)` is neither a sign-in nor an account event: filter the Okta query (see the mapping file)")
  end
| prune
| .unmapped = ($e | unmapped(["uuid", "published", "eventType", "displayMessage", "severity", "version", "actor", "outcome"])
    | if . then (if .client then del(.client.ipAddress, .client.geographicalContext) else . end) | prune else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
