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
