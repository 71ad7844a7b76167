//! `interlock demo`: it starts from a fresh checkout and every curl command it prints works.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{bin, skipped, KillOnDrop};

#[test]
fn demo_starts_and_its_printed_commands_succeed() {
    if Command::new("curl").arg("--version").output().is_err() {
        skipped("demo_starts_and_its_printed_commands_succeed", "`curl` is not installed (.ci/run installs it)");
        return;
    }
    let mut child = KillOnDrop(
        Command::new(bin())
            .arg("demo")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("INTERLOCK_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut commands = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("demo printed nothing");
        if let Some(cmd) = line.trim_start().strip_prefix("curl ") {
            commands.push(format!("curl {cmd}"));
        }
        if line.contains("Ctrl-C stops the demo") {
            break;
        }
    }
    assert!(commands.len() >= 6, "{commands:#?}");
    let run = |cmd: &str| {
        let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        assert!(out.status.success(), "`{cmd}` failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let outputs: Vec<String> = commands.iter().map(|c| run(c)).collect();
    let find = |needle: &str| {
        commands.iter().position(|c| c.contains(needle)).unwrap_or_else(|| panic!("no command with {needle}"))
    };
    let file: serde_json::Value = serde_json::from_str(&outputs[find("/intel/files/44d8")]).unwrap();
    assert_eq!(file["data"]["attributes"]["last_analysis_stats"]["malicious"], 66);
    let ids: serde_json::Value = serde_json::from_str(&outputs[find("/edr/alerts?limit=2")]).unwrap();
    assert_eq!(ids["resources"].as_array().unwrap().len(), 2);
    let details: serde_json::Value = serde_json::from_str(&outputs[find("/edr/alerts/details")]).unwrap();
    assert_eq!(details["resources"][0]["severity_name"], "High");
    // Asked for OCSF or STIX, the same routes answer translated and validated.
    let ocsf: serde_json::Value = serde_json::from_str(&outputs[find("application/ocsf+json")]).unwrap();
    assert_eq!(ocsf["resources"][0]["class_uid"], 2004, "{ocsf}");
    assert_eq!(ocsf["resources"][0]["severity_id"], 4);
    assert_eq!(ocsf["resources"][0]["finding_info"]["uid"], details["resources"][0]["composite_id"]);
    let stix: serde_json::Value = serde_json::from_str(&outputs[find("application/stix+json")]).unwrap();
    assert_eq!(stix["type"], "bundle", "{stix}");
    assert!(stix["objects"].as_array().unwrap().iter().any(|o| o["type"] == "indicator"), "{stix}");
    let again = &outputs[find("-D -")];
    assert!(again.to_ascii_lowercase().contains("interlock-cache: hit"), "{again}");
    let anon = &outputs[commands.iter().position(|c| !c.contains("x-api-key") && c.contains("/intel/files/")).unwrap()];
    assert!(anon.contains("401") && anon.contains("unauthenticated") && anon.contains("www-authenticate"), "{anon}");
    let nope = &outputs[find("/nope")];
    assert!(nope.contains("404") && nope.contains("application/problem+json") && nope.contains("no-route"), "{nope}");
    let trick = &outputs[find("%2f")];
    assert!(trick.contains("400") && trick.contains("invalid-path"), "{trick}");
    let status: serde_json::Value = serde_json::from_str(&outputs[find("/config/status")]).unwrap();
    assert_eq!(status["routes"], 4);
    // Ctrl-C ends it cleanly.
    assert!(Command::new("kill").args(["-INT", &child.0.id().to_string()]).status().unwrap().success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "demo did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
}
