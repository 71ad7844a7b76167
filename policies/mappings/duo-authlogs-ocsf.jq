# One Duo authentication log in, one OCSF Authentication (3002) event out.

# Duo factor -> OCSF auth factor type_id (1 SMS, 3 Phone Call, 5 Push, 6 Hardware Token, 7 OTP, 10 WebAuthn).
def duo_factor_type_id:
  {"duo_push": 5, "phone_call": 3, "sms_passcode": 1, "sms_refresh": 1, "passcode": 7, "duo_mobile_passcode": 7,
   "hardware_token": 6, "yubikey_code": 6, "webauthn_credential": 10, "webauthn_security_key": 10,
   "verified_duo_push": 5, "bypass_code": 7}[. // ""] // 99;

def duo_location: if . == null then null else {city: .city, region: .state, country: .country} end;

. as $l
| ($l.result // "") as $result
| {
    class_uid: 3002,
    class_name: "Authentication",
    category_uid: 3,
    category_name: "Identity & Access Management",
    # Duo records the second-factor step of a sign-in.
    activity_id: (if $l.event_type == "authentication" then 1 else 99 end),
    activity_name: (if $l.event_type == "authentication" then "Logon" else $l.event_type end),
    type_uid: (300200 + (if $l.event_type == "authentication" then 1 else 99 end)),
    time: ($l.isotimestamp // $l.timestamp | ms),
    # A suspected fraud is High; a denial Low; anything else Informational.
    severity_id: ({"fraud": 4, "denied": 2, "failure": 2}[$result] // 1),
    status_id: ({"success": 1, "denied": 2, "failure": 2, "fraud": 2, "error": 2}[$result] // 0),
    status: $l.result,
    status_detail: $l.reason,
    is_mfa: true,
    is_alert: (if $result == "fraud" then true else null end),
    user: {
      name: ($l.user.name // $l.email),
      uid: $l.user.key?,
      email_addr: $l.email,
      groups: [($l.user.groups // [])[] | {name: .}]
    },
    service: {name: ($l.application.name? // "Duo"), uid: $l.application.key?},
    src_endpoint: ($l.access_device | if . == null or .ip == null then null else {
      ip: .ip, hostname: .hostname, location: (.location | duo_location),
      os: (if .os then {name: .os, type_id: ({"Windows": 100, "Mac OS X": 300, "macOS": 300, "Linux": 200, "iOS": 301, "Android": 201}[.os] // 99), version: .os_version} else null end)
    } end),
    http_request: (if $l.access_device.browser? then {user_agent: ($l.access_device.browser + " " + ($l.access_device.browser_version // ""))} else null end),
    auth_factors: [
      select($l.factor != null and $l.factor != "not_available")
      | {factor_type: $l.factor, factor_type_id: ($l.factor | duo_factor_type_id),
         device: ($l.auth_device | if . == null or .name == null then null else {name: .name, type_id: 5, ip: .ip, location: (.location | duo_location)} end)}
    ],
    metadata: {
      version: "1.8.0",
      product: {name: "Duo", vendor_name: "Cisco"},
      uid: $l.txid,
      event_code: $l.event_type
    }
  }
| prune
| .unmapped = ($l | unmapped(["access_device", "application", "auth_device", "email", "event_type", "factor",
    "isotimestamp", "timestamp", "reason", "result", "txid", "user"]) | if . then prune else null end)
| if .unmapped == null or .unmapped == {} then del(.unmapped) else . end
