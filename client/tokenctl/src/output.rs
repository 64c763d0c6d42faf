//! How `tokenctl` shows things: tidy text for people, JSON for scripts.
//!
//! The JSON views are this program's stable output format, shared with tokend's HTTP API
//! (`tokend_proto::json`): times are RFC 3339 strings (UTC) alongside seconds-from-now, and
//! field names are snake_case. A time RFC 3339 cannot write (after 9999) is shown as the latest
//! it can, and seconds-from-now saturate, rather than fail.

use std::time::{Duration, SystemTime};

use tokend_client::ProfileStatus;
pub(crate) use tokend_proto::json::{StatusView, TokenView};
pub(crate) use tokend_proto::time::rfc3339;

/// "59m 12s", or "expired".
pub(crate) fn left(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) => short(d),
        Err(_) => "expired".into(),
    }
}

/// "in 59m 12s", or "expired".
fn when(t: SystemTime, now: SystemTime) -> String {
    match t.duration_since(now) {
        Ok(d) => format!("in {}", short(d)),
        Err(_) => "expired".into(),
    }
}

/// A duration to the second, at most two units: "1h 5m", "59m 12s", "3s".
pub(crate) fn short(d: Duration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        (h, m) if h < 48 => format!("{h}h {m}m"),
        (h, _) => format!("{}d {}h", h / 24, h % 24),
    }
}

/// The status table: one row per profile, with what to do under rows that need something.
pub(crate) fn status_table(statuses: &[ProfileStatus], now: SystemTime) -> String {
    let header = ["PROFILE", "GRANT", "STATE", "EXPIRES IN", "NEXT REFRESH", "REQUESTS", "LAST ERROR"];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for s in statuses {
        rows.push([
            s.name.clone(),
            s.grant.as_str().to_owned(),
            s.state.as_str().to_owned(),
            s.token.as_ref().map_or("-".into(), |t| left(t.expires_at, now)),
            s.next_refresh.map_or("-".into(), |t| match t.duration_since(now) {
                Ok(d) => format!("in {}", short(d)),
                Err(_) => "now".into(),
            }),
            s.upstream_requests.to_string(),
            s.last_error
                .as_ref()
                .map_or("-".into(), |f| format!("{} ago", short(now.duration_since(f.at).unwrap_or_default()))),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &[&str], out: &mut String| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header, &mut out);
    for (row, s) in rows.iter().zip(statuses) {
        line(&row.each_ref().map(String::as_str), &mut out);
        if let Some(error) = &s.last_error {
            out.push_str(&format!("    last error: {error}\n"));
        }
        if let Some(action) = &s.action {
            out.push_str(&format!("    → {action}\n"));
        }
        if let Some(until) = s.login_pending_until {
            out.push_str(&format!("    login pending until {}\n", rfc3339(until)));
        }
        if let Some(e) = &s.login_expiry {
            out.push_str(&format!(
                "    login {} ({}, from {})\n",
                match e.expires_at.duration_since(now) {
                    Ok(d) => format!("expires in {}", short(d)),
                    Err(_) => "expired".to_owned(),
                },
                rfc3339(e.expires_at),
                e.source.as_str()
            ));
        }
    }
    out
}

/// One profile in detail.
pub(crate) fn status_detail(s: &ProfileStatus, now: SystemTime) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<14} {value}\n"));
    field("profile", s.name.clone());
    field("grant", s.grant.as_str().into());
    field("state", s.state.as_str().into());
    match &s.token {
        Some(t) => {
            field("token", format!("{} ({})", t.fingerprint, t.token_type));
            field("expires", format!("{} (in {})", rfc3339(t.expires_at), left(t.expires_at, now)));
            field("obtained", rfc3339(t.obtained_at));
            if let Some(scope) = &t.scope {
                field("scope", scope.clone());
            }
        }
        None => field("token", "none".into()),
    }
    if let Some(next) = s.next_refresh {
        let when = match next.duration_since(now) {
            Ok(d) => format!("in {}", short(d)),
            Err(_) => "now".into(),
        };
        field("next refresh", format!("{} ({when})", rfc3339(next)));
    }
    if s.grant.has_login() {
        field("refresh token", if s.has_refresh_token { "held".into() } else { "none".into() });
    }
    if let Some(e) = &s.login_expiry {
        let warning = match (e.warned, e.warn_at.duration_since(now)) {
            (true, _) => "warned".to_owned(),
            (false, Ok(d)) => format!("warning in {}", short(d)),
            (false, Err(_)) => "warning due".to_owned(),
        };
        field(
            "login expires",
            format!("{} ({}; from {}; {warning})", rfc3339(e.expires_at), when(e.expires_at, now), e.source.as_str()),
        );
    }
    field("requests", s.upstream_requests.to_string());
    if let Some(error) = &s.last_error {
        field("last error", format!("{error} at {}", rfc3339(error.at)));
    }
    if let Some(since) = s.failing_since {
        field("failing since", rfc3339(since));
    }
    if let Some(until) = s.login_pending_until {
        field("login pending", format!("until {}", rfc3339(until)));
    }
    if let Some(action) = &s.action {
        field("to do", action.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use tokend_proto::json::seconds_from_now;

    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(short(Duration::from_secs(3)), "3s");
        assert_eq!(short(Duration::from_secs(3552)), "59m 12s");
        assert_eq!(short(Duration::from_secs(3900)), "1h 5m");
        assert_eq!(short(Duration::from_secs(3 * 86400 + 7200)), "3d 2h");
        assert!(short(Duration::MAX).ends_with('h'));
    }

    #[test]
    fn far_times_print_without_a_panic() {
        let now = SystemTime::now();
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 40);
        assert_eq!(rfc3339(far), "9999-12-31T23:59:59Z");
        assert!(seconds_from_now(far, now) > 30_000_000_000);
        assert!(left(far, now).ends_with('h'));
    }
}
