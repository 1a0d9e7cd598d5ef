//! The CNI error object and its well-known codes.

use std::fmt;

/// Error codes of the spec (and the two library extensions 8 and 999).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const INVALID_NETNS: u32 = 8;
    pub const NOT_AVAILABLE: u32 = 50;
    pub const INTERNAL: u32 = 999;
}

/// What a plugin prints on stdout when it fails: `{"code","msg","details"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

pub type CniResult<T> = Result<T, CniError>;

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Any failure without a spec code: 999, as the reference skel wraps untyped errors.
    pub fn internal(msg: impl fmt::Display) -> Self {
        CniError::new(code::INTERNAL, msg.to_string())
    }

    /// A network configuration that fails validation.
    pub fn config(msg: impl fmt::Display) -> Self {
        CniError::new(code::INVALID_CONFIG, msg.to_string())
    }

    /// Prefix the message with context, keeping the code.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.msg = format!("{what}: {}", self.msg);
        self
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("code".into(), self.code.into());
        obj.insert("msg".into(), self.msg.clone().into());
        if !self.details.is_empty() {
            obj.insert("details".into(), self.details.clone().into());
        }
        serde_json::Value::Object(obj)
    }

    /// Reads an error object printed by another plugin (a delegate).
    pub fn from_json(value: &serde_json::Value) -> Option<Self> {
        let code = value.get("code")?.as_u64()?;
        let text = |key: &str| value.get(key).and_then(|v| v.as_str()).unwrap_or_default();
        Some(CniError {
            code: u32::try_from(code).unwrap_or(code::INTERNAL),
            msg: text("msg").to_string(),
            details: text("details").to_string(),
        })
    }
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.details.is_empty() {
            write!(f, "{}", self.msg)
        } else {
            write!(f, "{}; {}", self.msg, self.details)
        }
    }
}

impl std::error::Error for CniError {}
