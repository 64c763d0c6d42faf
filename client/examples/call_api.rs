//! Calls an API with a token from tokend, and handles a 401 the way every tokend client should:
//! `with_token` reports the rejected token to tokend and retries once with the new one. However
//! many programs report the same token, tokend refreshes once.
//!
//!     cargo run -p tokend-client --example call_api -- minut https://api.minut.com/v8/users/me

use std::process::ExitCode;

use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use tokend_client::blocking::Client;
use tokend_client::{Attempt, TokenExt};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [profile, url] = args.as_slice() else {
        eprintln!("usage: call_api PROFILE URL");
        return ExitCode::from(2);
    };
    match call(profile, url) {
        Ok(body) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("call_api: {e}");
            ExitCode::FAILURE
        }
    }
}

fn call(profile: &str, url: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut tokend = Client::connect()?;
    // This workspace builds reqwest without a TLS crypto provider (tokend's DEVELOPERS.md says
    // why), so the example installs one; with reqwest's default features, leave this line out.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::blocking::Client::new();
    let response = tokend.with_token(profile, |token| {
        match http.get(url).header(AUTHORIZATION, token.header_value()).send() {
            Ok(response) if response.status() == StatusCode::UNAUTHORIZED => Attempt::Rejected(Ok(response)),
            answer => Attempt::Done(answer),
        }
    })??;
    let status = response.status();
    let body = response.text()?;
    if status.is_success() { Ok(body) } else { Err(format!("{url} answered {status}: {body}").into()) }
}
