//! Free text callers send (reasons, actors), its limits, and how long
//! values are shown.
//!
//! A reason travels in the signed envelope to every edge, into the store,
//! the log and every `history`: it is bounded where it enters, and shown
//! shortened (control characters escaped) wherever a person reads it.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Longest reason a caller may give, in bytes (UTF-8).
pub const MAX_REASON_BYTES: usize = 1024;
/// Longest actor name (token name, `plan:<id>`, `break-glass:<user>`), in bytes.
pub const MAX_ACTOR_BYTES: usize = 128;

/// Text that breaks the rule for its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidText {
    /// Over the byte limit.
    #[error("{len} bytes is over the limit of {limit} bytes")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A control character other than tab and newline (reason), or any
    /// control character (actor).
    #[error("must not contain control characters (found U+{0:04X})")]
    Control(u32),
    /// An actor with whitespace in it.
    #[error("must not contain whitespace")]
    Whitespace,
    /// An empty actor.
    #[error("must not be empty")]
    Empty,
}

/// A string type whose every value passed `check`: parsed from text and
/// from JSON through it, shown and stored as the text itself.
macro_rules! checked_text {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidText;

            fn try_from(text: String) -> Result<$name, InvalidText> {
                $check(&text)?;
                Ok($name(text))
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidText;

            fn from_str(s: &str) -> Result<$name, InvalidText> {
                $name::try_from(s.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(t: $name) -> String {
                t.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

checked_text!(
    /// Why a version was made: at most [`MAX_REASON_BYTES`], no control
    /// characters but tab and newline.
    Reason,
    check_reason
);

checked_text!(
    /// Who made a version: 1 to [`MAX_ACTOR_BYTES`], no whitespace or
    /// control characters.
    Actor,
    check_actor
);

fn too_long(text: &str, limit: usize) -> Result<(), InvalidText> {
    if text.len() > limit {
        return Err(InvalidText::TooLong {
            len: text.len(),
            limit,
        });
    }
    Ok(())
}

fn check_reason(text: &str) -> Result<(), InvalidText> {
    // Leave it out for the default; given, it says something.
    if text.trim().is_empty() {
        return Err(InvalidText::Empty);
    }
    too_long(text, MAX_REASON_BYTES)?;
    match text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t'))
    {
        Some(c) => Err(InvalidText::Control(c.into())),
        None => Ok(()),
    }
}

fn check_actor(text: &str) -> Result<(), InvalidText> {
    if text.is_empty() {
        return Err(InvalidText::Empty);
    }
    too_long(text, MAX_ACTOR_BYTES)?;
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(InvalidText::Control(c.into()));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(InvalidText::Whitespace);
    }
    Ok(())
}

/// `text` for one line of a log or a terminal: at most `max_chars`
/// characters of it, control characters escaped (`\n`, `\u{1b}`), and what
/// was cut said (`… (1048576 bytes)`).
pub fn shorten(text: &str, max_chars: usize) -> Cow<'_, str> {
    let long = text.chars().nth(max_chars).is_some();
    if !long && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::new();
    for c in text.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if long {
        let _ = write!(out, "… ({} bytes)", text.len());
    }
    Cow::Owned(out)
}

/// The longest prefix of `text` of at most `max_bytes` bytes that ends on a
/// character boundary: for storing text from outside (an edge's error) with
/// a bound.
pub fn clip(text: &str, max_bytes: usize) -> &str {
    if text.len() <= max_bytes {
        return text;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
