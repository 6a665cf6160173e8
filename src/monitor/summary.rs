//! [`Summary`]: what a source says about one of its records for a person — a label with a tone
//! (a decision, a level) and the details that matter, in order. The source decides what
//! matters; a formatter for people (`pretty`) decides how it looks. So a formatter knows no
//! source's format, and a new source reads well without touching any formatter.

/// How a label should strike the reader (a formatter maps tones to colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    /// Something was refused or failed: a deny, an ERROR.
    Alert,
    /// Worth a look: a WARN.
    Caution,
    /// Routine success: an allow, an INFO.
    Good,
    /// Background: a passthrough, a DEBUG.
    Quiet,
    /// A structural event in the stream itself: an audit segment marker.
    Notice,
}

/// One piece of the details. Its text came from the record: untrusted, so a formatter makes it
/// safe for its medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    /// Secondary information (a log target), shown dimmed where colour is used.
    pub dim: bool,
}

/// A record in one line for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Short and upper-case: `DENY`, `WARN`, `SEGMENT`.
    pub label: String,
    /// The column the label is padded to, so one source's lines align.
    pub label_width: usize,
    pub tone: Tone,
    /// The details after the label, concatenated as given (spans carry their own separators).
    pub details: Vec<Span>,
}

impl Summary {
    pub fn new(label: impl Into<String>, label_width: usize, tone: Tone) -> Self {
        Self {
            label: label.into(),
            label_width,
            tone,
            details: Vec::new(),
        }
    }

    /// Append plain text.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.details.push(Span {
            text: text.into(),
            dim: false,
        });
        self
    }

    /// Append dimmed text.
    pub fn dim(mut self, text: impl Into<String>) -> Self {
        self.details.push(Span {
            text: text.into(),
            dim: true,
        });
        self
    }
}
