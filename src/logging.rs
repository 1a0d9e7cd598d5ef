//! Logs go to stderr and optionally to a file, never to stdout (which carries only the result).
//! Level: env `CNI_LOG_LEVEL`, else config `logLevel`, else warn. File: config `logFile`.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;

use serde_json::Value;
use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;

use crate::cni::Env;

/// Installs the logger from a configuration; later calls (an in-process delegate) keep the first.
pub fn configure(config: &Value, applet: &str, env: &Env) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let text = |key: &str| config.get(key).and_then(Value::as_str).unwrap_or_default();
    let level_name = std::env::var("CNI_LOG_LEVEL").unwrap_or_else(|_| text("logLevel").into());
    let level = parse_level(&level_name).unwrap_or(Level::WARN);
    let mut problem = None;
    let file = match text("logFile") {
        "" => None,
        path => match OpenOptions::new().create(true).append(true).open(path) {
            Ok(f) => Some(Arc::new(f)),
            Err(e) => {
                problem = Some(format!("cannot open logFile {path}: {e}"));
                None
            }
        },
    };
    let installed = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(Sink { file })
        .try_init()
        .is_ok();
    if installed {
        if let Some(problem) = problem {
            tracing::warn!("{problem}");
        }
        tracing::debug!(
            applet,
            command = env.command.as_str(),
            container = env.container_id.as_str(),
            ifname = env.ifname.as_str(),
            netns = env.netns.as_str(),
            "start"
        );
    }
}

fn parse_level(name: &str) -> Option<Level> {
    Some(match name.to_ascii_lowercase().as_str() {
        "error" | "panic" => Level::ERROR,
        "warn" | "warning" => Level::WARN,
        "info" => Level::INFO,
        "debug" | "verbose" => Level::DEBUG,
        "trace" => Level::TRACE,
        _ => return None,
    })
}

/// Writes each formatted event to stderr and, if set, appends it to the log file. The formatter
/// hands over one whole line per write, so concurrent plugins never interleave inside a line.
#[derive(Clone)]
struct Sink {
    file: Option<Arc<File>>,
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Sink;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(mut file) = self.file.as_deref() {
            // A failing log file must not fail the plugin.
            let _ = file.write_all(buf);
        }
        io::stderr().write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        assert_eq!(parse_level("DEBUG"), Some(Level::DEBUG));
        assert_eq!(parse_level("warn"), Some(Level::WARN));
        assert_eq!(parse_level("bogus"), None);
    }
}
