//! `callgate-gateway verify` and `sign`, run as an SRE would run them.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs the gateway binary with `args`, the secret on standard input (`--secret-file -`), as
/// an SRE would keep it out of the process list and the shell history.
fn gateway(args: &[&str], secret: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_callgate-gateway"))
        .args(args)
        .args(["--secret-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{secret}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap().trim().to_owned())
}

/// A body written to a temporary file, removed again when the test ends (pass or fail).
struct BodyFile(String);

impl BodyFile {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn body_file(name: &str, body: &str) -> BodyFile {
    let path = std::env::temp_dir().join(format!("callgate-cli-{}-{name}", std::process::id()));
    std::fs::write(&path, body).unwrap();
    BodyFile(path.to_string_lossy().into_owned())
}

const RETELL_SIG: &str = "v=1700000000000,d=07024cabe7dd8f6d1c6e4a8324ca92c812e6ad4a7ee506c04f7e462e3321823e";

#[test]
fn retell_official_vector_valid_then_stale() {
    let file = body_file("retell", r#"{"event":"call_ended"}"#);
    let body = file.as_str();
    let base = ["verify", "--provider", "retell", "--signature", RETELL_SIG, "--body-file", body];
    let key = "test-api-key";
    let (code, out) = gateway(&[&base[..], &["--now-ms", "1700000000000"]].concat(), key);
    assert_eq!((code, out.as_str()), (0, "valid"));
    let (code, out) = gateway(&[&base[..], &["--now-ms", "1700000300001"]].concat(), key);
    assert_eq!((code, out.as_str()), (1, "invalid: timestamp outside the allowed window"));
    let (code, out) = gateway(&base, key);
    assert_eq!((code, out.as_str()), (1, "invalid: timestamp outside the allowed window"), "judged by today's clock");
}

#[test]
fn twilio_official_vector_and_wrong_signature() {
    let file = body_file(
        "twilio",
        "CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234&From=%2B14158675309&To=%2B18005551212",
    );
    let body = file.as_str();
    let args = |sig: &'static str| {
        vec![
            "verify",
            "--provider",
            "twilio",
            "--url",
            "https://mycompany.com/myapp.php?foo=1&bar=2",
            "--content-type",
            "application/x-www-form-urlencoded",
            "--signature",
            sig,
            "--body-file",
        ]
    };
    let (code, out) = gateway(&[&args("RSOYDt4T1cUTdK1PDd93/VVr8B8=")[..], &[body]].concat(), "12345");
    assert_eq!((code, out.as_str()), (0, "valid"));
    let (code, out) = gateway(&[&args("WRONG_SIGNATURE")[..], &[body]].concat(), "12345");
    assert_eq!((code, out.as_str()), (1, "invalid: signature does not match"));
}

#[test]
fn sign_produces_what_verify_accepts() {
    let file = body_file("roundtrip", r#"{"event":"call_started","call":{"call_id":"c"}}"#);
    let body = file.as_str();
    let (code, sig) = gateway(&["sign", "--provider", "retell", "--body-file", body], "k");
    assert_eq!(code, 0);
    assert!(sig.starts_with("v="), "{sig}");
    let verify = ["verify", "--provider", "retell", "--signature", &sig, "--body-file", body];
    let (code, out) = gateway(&verify, "k");
    assert_eq!((code, out.as_str()), (0, "valid"));
    let (code, out) = gateway(&verify, "other");
    assert_eq!((code, out.as_str()), (1, "invalid: signature does not match"));
}

#[test]
fn calcom_known_digest_no_secret_and_roundtrip() {
    let file = body_file("calcom", "The quick brown fox jumps over the lazy dog");
    let body = file.as_str();
    let verify = |secret: &str, sig: &str| {
        gateway(&["verify", "--provider", "calcom", "--signature", sig, "--body-file", body], secret)
    };
    let digest = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    assert_eq!(verify("key", digest), (0, "valid".to_owned()));
    assert_eq!(verify("other", digest), (1, "invalid: signature does not match".to_owned()));
    assert_eq!(
        verify("key", "no-secret-provided"),
        (1, "invalid: the sender was configured without a secret".to_owned())
    );
    let (code, sig) = gateway(&["sign", "--provider", "calcom", "--body-file", body], "key");
    assert_eq!((code, sig.as_str()), (0, digest));
}

#[test]
fn a_secret_is_never_taken_on_the_command_line_and_is_read_from_a_file() {
    let file = body_file("secret-file", "The quick brown fox jumps over the lazy dog");
    let secret = body_file("secret", "key\n");
    let digest = "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8";
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-gateway"))
        .args(["sign", "--provider", "calcom", "--body-file", file.as_str(), "--secret-file", secret.as_str()])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), digest, "one trailing newline is not part of it");
    // The old `--secret VALUE` put the secret in `ps` and in shell history: it is gone.
    let out = Command::new(env!("CARGO_BIN_EXE_callgate-gateway"))
        .args(["sign", "--provider", "calcom", "--body-file", file.as_str(), "--secret", "key"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing signed");
}
