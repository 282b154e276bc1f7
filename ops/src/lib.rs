//! What the gateway and the worker share to be run in production: the same log options and
//! formats, the same duration syntax, the same handling of options that carry credentials, and
//! the same shutdown signals and [`Shutdown`] type, the same retry schedule ([`backoff`]). Kept
//! apart from `callgate-contract`, which is the wire contract.

pub mod backoff;
mod shutdown;

pub use shutdown::{Shutdown, ShutdownTrigger, channel as shutdown_channel};

use std::time::Duration;

use clap::{Args, ValueEnum};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logging, shared by every subcommand that logs.
#[derive(Debug, Clone, Args)]
pub struct LogConfig {
    /// Log filter (tracing `EnvFilter` syntax, e.g. `info,callgate_worker=debug`).
    #[arg(long, env = "CALLGATE_LOG", default_value = "info")]
    pub log: String,
    /// Log line format.
    #[arg(long, env = "CALLGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// Installs the global subscriber: text for people, JSON for log pipelines.
pub fn init_logs(config: &LogConfig) {
    install_logs(config, std::io::stdout);
}

/// Logs of a command whose result goes to standard output: the log lines go to standard error.
pub fn init_command_logs(config: &LogConfig) {
    install_logs(config, std::io::stderr);
}

fn install_logs<W>(config: &LogConfig, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(writer);
    let result = match config.log_format {
        // JSON escapes every value already.
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.fmt_fields(text_fields()).try_init(),
    };
    // A subscriber may already be installed (tests); that one keeps working.
    drop(result);
}

/// How text log lines print fields: every value with its control characters escaped. Call
/// ids, event types and error details come from senders; a call id holding a newline and a
/// forged `INFO webhook accepted …` must stay on its own line, and an escape sequence must not
/// reach an operator's terminal. Otherwise as the default: the message, then `name=value`
/// pairs, and nothing of what the `log` bridge adds (`log.target`, `log.file`, …).
pub fn text_fields() -> EscapedFields {
    EscapedFields
}

#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for EscapedFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = EscapingVisitor { writer: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for EscapingVisitor<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let text = format!("{value:?}");
        let text = printable(&text);
        let separator = if std::mem::take(&mut self.first) { "" } else { " " };
        self.result = if field.name() == "message" {
            write!(self.writer, "{separator}{text}")
        } else {
            write!(self.writer, "{separator}{}={text}", field.name())
        };
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`, …); borrowed when there is
/// none, the common case.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A configuration value that may carry a credential: usable, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(pub String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for SecretString {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl AsRef<str> for SecretString {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Parses `250ms`, `3s`, `5m`, `1h`, `30d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 250ms, 3s, 5m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        "d" => Ok(Duration::from_secs(n * 86_400)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    }
}

/// One entry of a librdkafka property list (`--kafka-properties` and the like): `key=value`.
/// A typo such as `security.protocol:ssl` must stop the start with a clear error, not start a
/// client without that setting.
pub fn parse_kafka_property(text: &str) -> Result<SecretString, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => Ok(SecretString(text.to_owned())),
        _ => Err("a Kafka property must be key=value (the entry is not shown: it may hold a credential)".to_owned()),
    }
}

/// clap's value parser for [`parse_kafka_property`]. clap's own errors quote the rejected
/// value, and an entry may hold a credential (`sasl.password=…`), so this one names only the
/// option.
#[derive(Debug, Clone, Copy)]
pub struct KafkaPropertyParser;

impl clap::builder::TypedValueParser for KafkaPropertyParser {
    type Value = SecretString;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretString, clap::Error> {
        let parsed =
            value.to_str().ok_or_else(|| "a Kafka property must be UTF-8".to_owned()).and_then(parse_kafka_property);
        parsed.map_err(|message| {
            let option = arg.map_or_else(|| "a Kafka property".to_owned(), ToString::to_string);
            cmd.clone()
                .error(clap::error::ErrorKind::ValueValidation, format!("invalid value for '{option}': {message}"))
        })
    }
}

/// The `key=value` pairs of a librdkafka property list (entries checked by
/// [`parse_kafka_property`]), trimmed, in order (a later pair for the same key wins when set).
pub fn kafka_properties<S: AsRef<str>>(entries: &[S]) -> impl Iterator<Item = (&str, &str)> {
    entries.iter().filter_map(|entry| entry.as_ref().split_once('=')).map(|(key, value)| (key.trim(), value.trim()))
}

/// Resolves on Ctrl-C or SIGTERM (what an orchestrator sends before it kills).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => drop(ctrl_c.await),
        }
    }
    #[cfg(not(unix))]
    drop(ctrl_c.await);
}

/// `healthcheck`: asks a running process's ops listener, for container health checks in images
/// that have no shell, curl or wget.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The ops listener to ask (the gateway's --metrics-listen, the worker's --listen).
    #[arg(long, default_value = "127.0.0.1:9091")]
    pub addr: std::net::SocketAddr,
    /// `/healthz` (alive) or `/readyz` (ready to take work).
    #[arg(long, default_value = "/healthz")]
    pub path: String,
    /// Give up after this long.
    #[arg(long, value_parser = parse_duration, default_value = "3s")]
    pub timeout: Duration,
}

/// The HTTP status of `GET path` on `addr` (HTTP/1.0 over a plain socket: no client library).
pub fn healthcheck(args: &HealthcheckArgs) -> std::io::Result<u16> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(&args.addr, args.timeout)?;
    stream.set_read_timeout(Some(args.timeout))?;
    stream.set_write_timeout(Some(args.timeout))?;
    // One write: `write!` on the socket would send each formatted piece as its own segment.
    let request = format!("GET {} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n\r\n", args.path, args.addr);
    stream.write_all(request.as_bytes())?;
    let mut head = [0_u8; 32];
    let read = stream.read(&mut head)?;
    // "HTTP/1.x NNN …"
    std::str::from_utf8(&head[..read])
        .ok()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn healthcheck_reads_the_status_a_server_answers_and_fails_on_no_server() {
        use std::io::{Read as _, Write as _};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0_u8; 256];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "the request ended early");
                request.extend_from_slice(&chunk[..n]);
            }
            stream.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        let args = HealthcheckArgs { addr, path: "/readyz".into(), timeout: Duration::from_secs(5) };
        assert_eq!(healthcheck(&args).unwrap(), 503);
        assert!(server.join().unwrap().starts_with("GET /readyz HTTP/1.0\r\n"));
        // A server that hangs up without answering is a failure, and so is no server (port 0
        // never accepts; a port that was just freed could be taken by a parallel test).
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_args = HealthcheckArgs { addr: silent.local_addr().unwrap(), ..args.clone() };
        let hang_up = std::thread::spawn(move || drop(silent.accept().unwrap()));
        assert!(healthcheck(&silent_args).is_err());
        hang_up.join().unwrap();
        let nowhere = HealthcheckArgs { addr: "127.0.0.1:0".parse().unwrap(), ..args };
        assert!(healthcheck(&nowhere).is_err());
    }

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_log_lines_escape_what_senders_control() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(text_fields())
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("webhook", provider = "retell", trace_id = %"t1");
            let _entered = span.enter();
            let call_id = "c1\nINFO webhook accepted call_id=forged\u{1b}[2J";
            tracing::warn!(call_id = %call_id, outcome = "malformed", "webhook refused: {}", call_id);
        });
        let bytes = captured.0.lock().map(|b| b.clone()).unwrap_or_default();
        let out = String::from_utf8_lossy(&bytes);
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(out.contains(r"call_id=c1\nINFO webhook accepted call_id=forged\u{1b}[2J"), "{out}");
        assert!(out.contains(r"webhook refused: c1\nINFO"), "{out}");
        assert!(out.contains(r#" webhook{provider="retell" trace_id=t1}: "#), "{out}");
        assert_eq!(printable("plain"), std::borrow::Cow::Borrowed("plain"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn kafka_property_entries_need_a_key_and_an_equals_sign() {
        assert_eq!(parse_kafka_property("sasl.password=a=b").unwrap().expose(), "sasl.password=a=b");
        assert!(parse_kafka_property("acks=").is_ok(), "an empty value is librdkafka's to judge");
        for bad in ["security.protocol:ssl", "=ssl", " = x", ""] {
            let error = parse_kafka_property(bad).unwrap_err();
            assert!(error.contains("key=value"), "{bad:?}: {error}");
        }
        let error = parse_kafka_property("sasl.password hunter2").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn kafka_properties_are_trimmed_pairs() {
        let entries = ["security.protocol=ssl", " sasl.password = a=b ", "no-equals-sign"];
        let pairs: Vec<_> = kafka_properties(&entries).collect();
        assert_eq!(pairs, [("security.protocol", "ssl"), ("sasl.password", "a=b")]);
    }

    #[test]
    fn secret_strings_do_not_print() {
        let secret: SecretString = "hunter2".parse().unwrap();
        assert_eq!(format!("{secret:?}"), "<redacted>");
        assert_eq!(secret.expose(), "hunter2");
    }
}
