//! `evroute route` end to end: the real binary, real files, SPEC §8.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("evroute-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn route(subscribers: &PathBuf, events: Option<&PathBuf>, stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_evroute"));
    cmd.arg("route").arg("--subscribers").arg(subscribers);
    if let Some(e) = events {
        cmd.arg(e);
    }
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // Feed stdin from another thread: the child writes output while it reads.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    output
}

const SUBSCRIBERS: &str = r#"{"id": "a", "account": 7, "subscriptions": [{"stream": "public"}, {"stream": "user"}]}
{"id": 2, "subscriptions": [{"stream": "hashtag", "tag": "Rust"}, {"stream": "public:local"}]}
"#;

const STATUS: &str = r#"{"id":"5","visibility":"public","reblog":null,"in_reply_to_account_id":null,"account":{"id":"1","acct":"me"},"media_attachments":[],"tags":[{"name":"rust"}]}"#;

#[test]
fn output_is_in_event_then_subscriber_then_subscription_order() {
    let subs = temp_file("order-subs.ndjson", SUBSCRIBERS);
    let events = format!(
        "{{\"event\":\"update\",\"payload\":{STATUS},\"recipients\":[7]}}\n\n{{\"channel\":\"timeline:public\",\"message\":{{\"event\":\"delete\",\"payload\":\"5\"}}}}\n"
    );
    let out = route(&subs, None, &events);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let escaped = STATUS.replace('"', "\\\"");
    let expected = [
        format!(r#"{{"subscriber":"a","stream":["public"],"event":"update","payload":"{escaped}"}}"#),
        format!(r#"{{"subscriber":"a","stream":["user"],"event":"update","payload":"{escaped}"}}"#),
        format!(r#"{{"subscriber":2,"stream":["hashtag","Rust"],"event":"update","payload":"{escaped}"}}"#),
        format!(r#"{{"subscriber":2,"stream":["public:local"],"event":"update","payload":"{escaped}"}}"#),
        r#"{"subscriber":"a","stream":["public"],"event":"delete","payload":"5"}"#.to_string(),
    ];
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected.join("\n") + "\n");
}

#[test]
fn bad_lines_are_reported_with_file_and_line_and_the_rest_is_routed() {
    let subs = temp_file(
        "bad-subs.ndjson",
        "{\"id\":\"x\",\"subscriptions\":[{\"stream\":\"bogus\"},{\"stream\":\"public\"}]}\nnot json\n",
    );
    let events = temp_file(
        "bad-events.ndjson",
        "{\"event\":\"update\",\n{\"channel\":\"timeline:nope:x\",\"message\":{\"event\":\"x\"}}\n{\"channel\":\"timeline:public\",\"message\":{\"event\":\"delete\",\"payload\":\"9\"}}\n",
    );
    let out = route(&subs, Some(&events), "");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let subs_name = subs.display().to_string();
    let events_name = events.display().to_string();
    assert!(stderr.contains(&format!("{subs_name}:1: subscription 1: Unknown stream type")), "{stderr}");
    assert!(stderr.contains(&format!("{subs_name}:2: invalid JSON")), "{stderr}");
    assert!(stderr.contains(&format!("{events_name}:1: invalid JSON")), "{stderr}");
    assert!(stderr.contains(&format!("{events_name}:2: unknown channel")), "{stderr}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"subscriber\":\"x\",\"stream\":[\"public\"],\"event\":\"delete\",\"payload\":\"9\"}\n"
    );
}

#[test]
fn queues_are_unbounded_so_nothing_drops() {
    let subs = temp_file("many-subs.ndjson", "{\"id\":1,\"subscriptions\":[{\"stream\":\"public\"}]}\n");
    let events: String = (0..3000)
        .map(|i| format!("{{\"channel\":\"timeline:public\",\"message\":{{\"event\":\"e\",\"payload\":\"{i}\"}}}}\n"))
        .collect();
    let out = route(&subs, None, &events);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 3000);
    assert!(stdout.lines().last().unwrap().contains("\"payload\":\"2999\""));
}

#[test]
fn the_demo_routes_cleanly() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(env!("CARGO_BIN_EXE_evroute"))
        .arg("route")
        .arg("--subscribers")
        .arg(root.join("demo/subscribers.ndjson"))
        .arg(root.join("demo/events.ndjson"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.lines().all(|l| l.starts_with("{\"subscriber\":")));
    assert!(stdout.contains(r#"{"subscriber":"alice","stream":["user"],"event":"filters_changed"}"#));
}

#[test]
fn keyword_filters_blocked_by_and_origin_from_the_subscribers_file() {
    let subs = temp_file(
        "filters-subs.ndjson",
        concat!(
            r#"{"id":"f","keyword_filters":[{"id":"3","title":"R","keywords":[{"keyword":"RUST","whole_word":true}]}],"subscriptions":[{"stream":"public"}]}"#,
            "\n",
            r#"{"id":"b","blocked_by_accounts":["1"],"subscriptions":[{"stream":"public"}]}"#,
            "\n",
            r#"{"id":"r","subscriptions":[{"stream":"public","origin":"remote"}]}"#,
            "\n",
            r#"{"id":"bad","keyword_filters":[{"id":"4","keywords":[{"keyword":true}]}],"subscriptions":[]}"#,
            "\n",
        ),
    );
    let status = STATUS.replace(r#""id":"5""#, r#""id":"5","content":"<p>I &lt;3 rust</p>""#);
    let out = route(&subs, None, &format!("{{\"event\":\"update\",\"payload\":{status}}}\n"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(":4:") && stderr.contains(r#"keyword_filters[0] (id "4"): keywords[0]"#), "{stderr}");
    let annotated = format!(
        r#"{},"filtered":[{{"filter":{{"id":"3","title":"R","context":[],"expires_at":null,"filter_action":"warn"}},"keyword_matches":["rust"],"status_matches":null}}]}}"#,
        status.strip_suffix('}').unwrap()
    );
    let expected = format!(
        r#"{{"subscriber":"f","stream":["public"],"event":"update","payload":{}}}"#,
        evroute::internal::quote(&annotated)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected + "\n");
}

#[test]
fn every_command_prints_its_help_on_stdout_and_exits_0() {
    let mut commands = vec![("route", &["--subscribers"][..])];
    // node and publish exist only with the redis feature (on by default).
    if cfg!(feature = "redis") {
        commands.push(("node", &["--redis", "--subscribers", "--namespace", "--presence-ttl"][..]));
        commands.push(("publish", &["--redis", "--namespace"][..]));
    }
    for (command, options) in commands {
        for flag in ["--help", "-h"] {
            // Help wins over anything else on the line, even a missing required option.
            let out = Command::new(env!("CARGO_BIN_EXE_evroute")).args([command, "--bogus", flag]).output().unwrap();
            let text = String::from_utf8(out.stdout).unwrap();
            assert_eq!(out.status.code(), Some(0), "{command} {flag}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(text.starts_with(&format!("usage: evroute {command} ")), "{command} {flag}: {text}");
            for option in options {
                assert!(text.contains(option), "{command} {flag}: help does not mention {option}");
            }
            assert!(out.stderr.is_empty());
        }
    }
    // An unknown option is still a usage error, with the usage on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_evroute")).args(["route", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus\nusage: evroute route"));
}
