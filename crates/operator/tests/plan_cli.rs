//! `liveclass-operator plan`, run as a user would (the binary, a file, no cluster): the
//! timeline it prints for a recurring class across a daylight-saving change is the planner's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use chrono::{DateTime, TimeDelta, Utc};
use liveclass_api::{Observed, Phase, plan, validate_class};
use serde_json::Value;

const WEEKLY_BERLIN: &str = r#"
apiVersion: liveclass.dev/v1alpha1
kind: LiveClass
metadata: { name: sunday-physics, namespace: school }
spec:
  schedule: { cron: "0 14 * * SUN", timeZone: Europe/Berlin, duration: 1h }
  expectedAttendance: 3000
  warmup: 10m
  cooldown: 15m
  socket: { image: x, connectionsPerPod: 500, podStartup: 2m, scaleDown: { stepPercent: 50, interval: 1m } }
"#;

fn run(args: &[&str], stdin_file: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liveclass-operator"))
        .arg("plan")
        .arg("-f")
        .arg(stdin_file)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn a_weekly_class_across_the_spring_clock_change_gets_the_planners_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("class.yaml");
    std::fs::write(&file, WEEKLY_BERLIN).unwrap();
    let (ok, out, err) = run(
        &[
            "--at",
            "2026-03-21T00:00:00Z",
            "--occurrences",
            "2",
            "-o",
            "json",
        ],
        &file,
    );
    assert!(ok, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["class"], "school/sunday-physics");
    let occurrences = json["occurrences"].as_array().unwrap();
    // 14:00 in Berlin: 13:00Z before the change (CET), 12:00Z after it (CEST).
    let starts: Vec<_> = occurrences.iter().map(|o| time(&o["start"])).collect();
    assert_eq!(
        starts,
        [
            time(&"2026-03-22T13:00:00Z".into()),
            time(&"2026-03-29T12:00:00Z".into())
        ]
    );

    // Checked against the planner at every milestone the preview names.
    let lc: liveclass_api::LiveClass = serde_yaml::from_str(WEEKLY_BERLIN).unwrap();
    let spec = validate_class(&lc).unwrap();
    for o in occurrences {
        let replicas = o["classReplicas"].as_u64().unwrap() as u32;
        assert_eq!(
            replicas, 8,
            "3,000 students at 500 a pod with 25% headroom: 7.5, up"
        );
        let at = |key: &str, current: u32| {
            plan(
                &spec,
                time(&o[key]),
                &Observed {
                    current_replicas: Some(current),
                    ..Observed::default()
                },
            )
        };
        let up = at("scaleUpAt", 1);
        assert_eq!((up.phase, up.socket.replicas), (Phase::WarmingUp, replicas));
        let before = plan(
            &spec,
            time(&o["scaleUpAt"]) - TimeDelta::seconds(1),
            &Observed::default(),
        );
        assert_eq!(before.phase, Phase::Scheduled);
        assert_eq!(
            time(&o["readyBy"]),
            time(&o["start"]) - TimeDelta::minutes(10)
        );
        assert_eq!(at("start", replicas).phase, Phase::Live);
        assert_eq!(at("end", replicas).phase, Phase::CoolingDown);
        // Each drain step is the planner's step at that instant.
        let mut current = replicas;
        let mut last = None;
        for step in o["drain"].as_array().unwrap() {
            let p = plan(
                &spec,
                time(&step["at"]),
                &Observed {
                    current_replicas: Some(current),
                    last_scale_down: last,
                    ..Observed::default()
                },
            );
            assert_eq!(
                u64::from(p.socket.replicas),
                step["replicas"].as_u64().unwrap()
            );
            current = p.socket.replicas;
            last = p.socket.last_scale_down;
        }
        assert_eq!(current, 1, "drained to the idle replicas");
        assert_eq!(o["after"], "Scheduled");
    }

    // The text form, for people, shows local times with the zone's abbreviation.
    let (ok, text, err) = run(
        &["--at", "2026-03-21T00:00:00Z", "--occurrences", "2"],
        &file,
    );
    assert!(ok, "{err}");
    assert!(text.contains("CET") && text.contains("CEST"), "{text}");
    assert!(text.contains("drain"), "{text}");
}

#[test]
fn a_class_the_operator_would_refuse_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("class.yaml");
    std::fs::write(
        &file,
        WEEKLY_BERLIN.replace("Europe/Berlin", "Europe/Atlantis"),
    )
    .unwrap();
    let (ok, _, err) = run(&[], &file);
    assert!(!ok);
    assert!(err.contains("Europe/Atlantis"), "{err}");
    let valid = dir.path().join("valid.yaml");
    std::fs::write(&valid, WEEKLY_BERLIN).unwrap();
    let (ok, _, err) = run(&["--at", "tomorrow"], &valid);
    assert!(!ok);
    assert!(err.contains("--at \"tomorrow\""), "{err}");
    let (ok, _, err) = run(&[], &dir.path().join("missing.yaml"));
    assert!(!ok);
    assert!(err.contains("missing.yaml"), "{err}");
}
