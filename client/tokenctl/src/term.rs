//! Where tokenctl's output goes, and how it gets there safely.
//!
//! - **What a terminal shows is inert.** Text written to a terminal has its control characters
//!   (all but newline and tab) and Unicode's bidirectional overrides written as escapes
//!   (`\u{1b}`), so nothing a server sent — an info body, an error description — can move the
//!   cursor, retitle the window, rewrite what is on screen or read differently than it is.
//!   Written to a pipe or a file, output is exactly what tokend sent, so that scripts get an
//!   info body byte for byte (`--json` included: a program reads it).
//! - **A closed stdout ends tokenctl quietly**, with status 0, as when `| head` has read
//!   enough. SIGPIPE stays ignored (Rust's default), so writes to tokend's socket report a
//!   broken pipe as an error the client handles; only stdout's broken pipe ends the program.
//! - **Errors writing to stderr are ignored**: there is nowhere left to report them.

use std::borrow::Cow;
use std::io::{self, IsTerminal, Write};

/// Writes `text` to stdout.
pub(crate) fn out(text: &str) {
    let stdout = io::stdout();
    let text = if stdout.is_terminal() { escape(text) } else { Cow::Borrowed(text) };
    let mut lock = stdout.lock();
    if let Err(e) = lock.write_all(text.as_bytes()).and_then(|()| lock.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Say why the output is missing, where a disk is full, say; the exit status says so too.
        err(&format!("tokenctl: cannot write the output: {e}\n"));
        std::process::exit(1);
    }
}

/// Writes `text` to stderr.
pub(crate) fn err(text: &str) {
    let stderr = io::stderr();
    let text = if stderr.is_terminal() { escape(text) } else { Cow::Borrowed(text) };
    let _ = stderr.lock().write_all(text.as_bytes());
}

/// `println!` through [`out`].
macro_rules! outln {
    ($($arg:tt)*) => { $crate::term::out(&format!("{}\n", format_args!($($arg)*))) };
}

/// `eprintln!` through [`err`].
macro_rules! errln {
    ($($arg:tt)*) => { $crate::term::err(&format!("{}\n", format_args!($($arg)*))) };
}

pub(crate) use {errln, outln};

/// `text` with every character a terminal would act on written as an escape.
fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_a_terminal) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if acts_on_a_terminal(c) {
            escaped.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

fn acts_on_a_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_left_alone() {
        assert!(matches!(escape("a token: abc\n\tindented"), Cow::Borrowed(_)));
    }

    #[test]
    fn escapes_and_overrides_are_shown_not_obeyed() {
        assert_eq!(escape("\u{1b}]0;owned\u{7}"), "\\u{1b}]0;owned\\u{7}");
        assert_eq!(escape("a\rb\u{9b}2J\u{202e}c\u{7f}"), "a\\u{d}b\\u{9b}2J\\u{202e}c\\u{7f}");
    }
}
