//! One error type for operator-facing failures: what went wrong (naming the file, flag or
//! address involved) and what to do next. The CLI prints it as `error: …` plus `hint: …`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hinted {
    message: String,
    hint: Option<String>,
}

impl Hinted {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
        }
    }

    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint_text(&self) -> Option<&str> {
        self.hint.as_deref()
    }
}

impl fmt::Display for Hinted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Hinted {}

/// An error and its causes on one line, `outer: cause: root cause` — tonic's and hyper's top-level
/// messages are often just "transport error". A cause whose text the message already contains is
/// not repeated.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_lists_causes_once() {
        let io = std::io::Error::other("connection refused");
        let outer = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, io);
        assert_eq!(super::chain(&outer), "connection refused");
        let wrapped = super::Hinted::new("x");
        assert_eq!(super::chain(&wrapped), "x");
    }
}
