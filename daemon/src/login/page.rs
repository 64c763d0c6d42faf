//! The pages the login listener shows in the browser: the last page of a login, which tells the
//! user what happened (logged in, or why not), for which profile, and what to do next; and the
//! short answers to requests that are not the awaited redirect.
//!
//! Each page is one small, self-contained HTML document: no scripts, no external resources, one
//! inline style admitted by its hash in a Content-Security-Policy that allows nothing else.
//! Everything shown is HTML-escaped, because the reason for a failure can carry text from the
//! redirect (the server's `error` and `error_description`, already stripped of control
//! characters) and so from whoever crafted the link the browser followed.

use std::sync::LazyLock;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};
use tokend_proto::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long the browser may take to accept a page.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the browser is shown.
pub(super) enum Page<'a> {
    /// The login succeeded and tokend holds the profile's tokens.
    LoggedIn {
        /// The profile's name.
        profile: &'a str,
    },
    /// The login ended without tokens.
    Failed {
        /// The profile's name.
        profile: &'a str,
        /// Why, in tokend's words.
        why: String,
    },
    /// Not the redirect the login waits for; the login goes on.
    Ignored {
        /// Why the request was not taken as the redirect.
        why: &'a str,
    },
}

impl<'a> Page<'a> {
    /// The page for a login of `profile` that ended in `error`.
    pub(super) fn failed(profile: &'a str, error: &Error) -> Page<'a> {
        let why = match error {
            // The heading already says the login failed; the message says why.
            Error::Login { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Page::Failed { profile, why }
    }

    /// The page's HTML document.
    fn html(&self) -> String {
        let (kind, title, body) = match self {
            Page::LoggedIn { profile } => {
                let profile = escape(profile);
                (
                    "ok",
                    format!("tokend: logged in to {profile}"),
                    format!(
                        "<h1>Logged in</h1>\n<p>tokend now holds the tokens of profile <strong>{profile}</strong>. \
                         Programs get them with <code>tokenctl token {profile}</code>.</p>\n\
                         <p class=\"next\">You can close this tab.</p>"
                    ),
                )
            }
            Page::Failed { profile, why } => {
                let profile = escape(profile);
                (
                    "failed",
                    format!("tokend: login to {profile} failed"),
                    format!(
                        "<h1>Login failed</h1>\n<p>Profile <strong>{profile}</strong> is not logged in.</p>\n\
                         <p class=\"why\">{why}</p>\n\
                         <p class=\"next\">To try again, run <code>tokenctl login {profile}</code>. \
                         You can close this tab.</p>",
                        why = escape(&capitalized(why))
                    ),
                )
            }
            Page::Ignored { why } => (
                "ignored",
                "tokend".to_owned(),
                format!("<h1>Not the login tokend is waiting for</h1>\n<p class=\"why\">{}</p>", escape(why)),
            ),
        };
        format!(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n\
             <body>\n<main class=\"{kind}\">\n{body}\n</main>\n</body>\n</html>\n"
        )
    }
}

/// The pages' only style, admitted by its hash (see [`CSP`]).
const STYLE: &str = "\
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}\
body{margin:0;display:flex;justify-content:center}\
main{max-width:34em;margin:2em 1.5em;padding:0.5em 1.5em;border-left:0.4em solid #888}\
main.ok{border-color:#2e7d32}main.failed{border-color:#c62828}\
h1{font-size:1.5em}.why{overflow-wrap:anywhere}\
code{font-size:1.05em;padding:0.1em 0.3em;border-radius:0.2em;background:#8883}\
.next{font-weight:600}";

/// The Content-Security-Policy of every page: nothing but the inline style.
static CSP: LazyLock<String> = LazyLock::new(|| {
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
});

/// Sends `page` with `status` and closes the connection.
pub(super) async fn respond(stream: &mut TcpStream, status: &str, page: &Page<'_>) {
    let body = page.html();
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {csp}\r\nX-Content-Type-Options: nosniff\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        csp = *CSP
    );
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// `text` with its first letter in upper case, to stand as a sentence of its own.
fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_request_is_escaped() {
        let page =
            Page::Failed { profile: "web", why: "the server refused: <script>alert('x')</script> & \"more\"".into() };
        let html = page.html();
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;"), "{html}");
    }

    #[test]
    fn the_policy_admits_exactly_the_pages_style() {
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()));
        assert!(CSP.starts_with("default-src 'none'; "), "{}", *CSP);
        assert!(CSP.contains(&format!("style-src 'sha256-{hash}'")), "{}", *CSP);
        let html = Page::LoggedIn { profile: "web" }.html();
        assert!(html.contains(&format!("<style>{STYLE}</style>")), "the hashed text is the style verbatim");
        assert!(!html.contains("src=") && !html.contains("href="), "no external resources: {html}");
    }

    #[test]
    fn a_failure_says_why_and_how_to_try_again() {
        let error = Error::Login { profile: "web".into(), message: "the server refused: access_denied".into() };
        let html = Page::failed("web", &error).html();
        assert!(html.contains("<h1>Login failed</h1>"), "{html}");
        assert!(html.contains("<p class=\"why\">The server refused: access_denied</p>"), "{html}");
        assert!(!html.contains("login for profile"), "the heading says it failed, the reason need not: {html}");
        assert!(html.contains("<code>tokenctl login web</code>"), "{html}");
    }
}
