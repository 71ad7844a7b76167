# Interlock's helpers for mapping programs. Every mapping can call them; they are plain jq, so
# `jq` runs a mapping too when this file is put in front of it (`interlock translate` does not
# need that).

# A number, from a number or a numeric string ("42", "0.5"); anything else gives null.
def num: if type == "number" then . elif type == "string" then (tonumber? // null) else null end;

# An integer (rounded down), from a number or a numeric string; anything else gives null.
def int: num | if . == null then null else floor end;

# A boolean, from a boolean or "true" / "false" (any case); anything else gives null.
def bool:
  if type == "boolean" then .
  elif type == "string" then ({"true": true, "false": false}[ascii_downcase])
  else null end;

# Epoch milliseconds (OCSF timestamp_t) from an RFC 3339 time with any number of fraction digits
# and a `Z` or `±hh:mm` offset, or from epoch seconds or milliseconds (number or numeric string).
# Anything else gives null.
def ms:
  def epoch: if . > 100000000000 then floor else . * 1000 | floor end;
  if type == "number" then epoch
  elif type == "string" and test("^[0-9]+(\\.[0-9]+)?$") then tonumber | epoch
  elif type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}") then
    .[19:] as $rest
    | ((.[0:10] + "T" + .[11:19] + "Z") | fromdateiso8601) * 1000
      + ($rest | if startswith(".") then ((.[1:] | match("^[0-9]*").string) + "000")[0:3] | tonumber else 0 end)
      - ($rest | (capture("(?<s>[+-])(?<h>[0-9]{2}):?(?<m>[0-9]{2})$")
                  | ((.h | tonumber) * 60 + (.m | tonumber)) * 60000 * (if .s == "-" then -1 else 1 end)) // 0)
  else null end;

# An RFC 3339 UTC time with milliseconds (ECS `@timestamp`, STIX timestamps) from what `ms` reads.
def iso: ms | if . == null then null else (. / 1000 | floor | todateiso8601 | .[0:19]) + "." + ((. % 1000) + 1000 | tostring | .[1:4]) + "Z" end;

# OCSF severity_id from a severity word (informational/info/low/medium/moderate/high/critical/fatal);
# another word gives 99 (Other), null gives 0 (Unknown).
def severity_id:
  if . == null then 0
  else {"informational": 1, "info": 1, "low": 2, "medium": 3, "moderate": 3, "high": 4, "critical": 5, "fatal": 6}[tostring | ascii_downcase] // 99
  end;

# OCSF severity_id from a 0-100 score (1-19 informational ... 80-100 critical); null gives 0.
def score_severity_id:
  num | if . == null then 0 elif . < 20 then 1 elif . < 40 then 2 elif . < 60 then 3 elif . < 80 then 4 else 5 end;

# Removes nulls, empty strings, empty lists and empty objects, at every depth (OCSF and ECS
# leave absent what is unknown).
def prune:
  walk(
    if type == "object" then with_entries(select(.value != null and .value != "" and .value != [] and .value != {}))
    elif type == "array" then map(select(. != null and . != "" and . != [] and . != {}))
    else . end
  );

# The input without the keys listed (top-level names), for `unmapped`; null if nothing is left.
def unmapped(keys): (keys) as $k | with_entries(select(.key as $x | $k | index([$x]) | not)) | if . == {} then null else . end;

# The MITRE ATT&CK enterprise tactic named by the input, in any spelling ("DefenseEvasion",
# "defense_evasion", "Defense Evasion", "CommandAndControl"): {name, uid}, or null.
def mitre_tactic:
  {
    "reconnaissance": ["Reconnaissance", "TA0043"], "resourcedevelopment": ["Resource Development", "TA0042"],
    "initialaccess": ["Initial Access", "TA0001"], "execution": ["Execution", "TA0002"],
    "persistence": ["Persistence", "TA0003"], "privilegeescalation": ["Privilege Escalation", "TA0004"],
    "defenseevasion": ["Defense Evasion", "TA0005"], "credentialaccess": ["Credential Access", "TA0006"],
    "discovery": ["Discovery", "TA0007"], "lateralmovement": ["Lateral Movement", "TA0008"],
    "collection": ["Collection", "TA0009"], "commandandcontrol": ["Command and Control", "TA0011"],
    "exfiltration": ["Exfiltration", "TA0010"], "impact": ["Impact", "TA0040"]
  }[if type == "string" then ascii_downcase | gsub("[^a-z]"; "") else "" end]
  | if . == null then null else {name: .[0], uid: .[1]} end;
