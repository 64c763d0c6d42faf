//! Rules of the machine that a mutation run (`cargo mutants`, see DEVELOPERS.md) found no test
//! for: the counters that waiting clients and `tokenctl status` rely on, when the user is told
//! to log in, the timer a backoff arms, the phase a profile rests in when the token it holds
//! cannot be served, and when the end of a login is watched for and shown.

use super::tests::{M, T0, ac, cc, current, exchange, logged_in, refresh_expiry, secs, set, tuning, upstream};
use super::*;
use crate::oauth::Retry;

#[test]
fn every_new_token_and_every_logout_bumps_the_generation() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    let mut seen = vec![m.generation()];
    for (i, token) in ["a", "b", "c"].into_iter().enumerate() {
        let now = T0 + secs(10 * i as u64);
        m.handle(Event::Force(1), now, 0.0);
        m.handle(Event::Obtained(set(token, now, 3600, None)), now, 0.0);
        seen.push(m.generation());
    }
    m.handle(Event::LoggedOut, T0 + secs(60), 0.0);
    seen.push(m.generation());
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "waiting clients must see each change: {seen:?}");
}

#[test]
fn status_counts_every_request_sent_upstream() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    assert_eq!(m.status(T0).upstream_requests, 0, "nothing is sent without a login");
    exchange(&mut m, T0);
    assert_eq!(m.status(T0).upstream_requests, 1, "the code exchange counts");
    m.handle(Event::Obtained(set("a", T0, 3600, Some("rt"))), T0, 0.0);
    m.handle(Event::Force(1), T0, 0.0);
    assert_eq!(m.status(T0).upstream_requests, 2, "and so does the refresh");
}

#[test]
fn a_new_token_is_held_as_the_server_issued_it() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    let issued = TokenSet { scope: Some("read".into()), ..set("a", T0, 3600, None) };
    m.handle(Event::Obtained(issued), T0 + secs(1), 0.0);
    let held = m.token().expect("the token to save");
    assert_eq!(held.access_token.expose(), "a");
    assert_eq!((held.obtained_at, held.expires_at), (T0, T0 + secs(3600)));
    assert_eq!(held.scope.as_deref(), Some("read"));
    assert_eq!(held.fingerprint, Fingerprint::of("a"));
    assert!(!held.rejected);
}

#[test]
fn a_rejected_token_is_still_held_so_that_logout_can_revoke_it() {
    let mut m = ac(Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Invalidate(Fingerprint::of("a")), T0, 0.0);
    assert!(m.servable("movemint").is_none());
    let held = m.token().expect("still held");
    assert_eq!(held.access_token.expose(), "a");
    assert!(held.rejected);
}

#[test]
fn the_user_is_told_once_when_a_login_becomes_necessary() {
    let mut m = ac(Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    let fx = m.handle(Event::Due, due, 0.0);
    assert_eq!(fx.login_needed.as_deref(), Some("no refresh token is held"));
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    let fx = m.handle(Event::Force(1), due, 0.0);
    assert_eq!(fx.login_needed, None, "not again while it is still needed");
    assert!(matches!(&fx.replies[..], [(1, Err(Error::LoginNeeded { .. }))]), "{:?}", fx.replies);
    let fx = m.handle(Event::Invalidate(Fingerprint::of("a")), due, 0.0);
    assert_eq!(fx.login_needed, None);
}

#[test]
fn a_rejected_token_without_a_refresh_token_needs_a_login_and_says_so() {
    let mut m = ac(Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Invalidate(Fingerprint::of("a")), T0 + secs(5), 0.0);
    assert_eq!(fx.request, None);
    assert_eq!(fx.login_needed.as_deref(), Some("no refresh token is held"));
}

#[test]
fn a_backoff_arms_the_timer_for_the_retry() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Failed(upstream(Retry::Transient, None)), T0, 1.0);
    assert_eq!(m.deadline(), Some(T0 + secs(1)));
    assert_eq!(m.status(T0).next_refresh, Some(T0 + secs(1)), "status shows when");
}

#[test]
fn a_restored_token_that_expires_at_start_is_refreshed_at_once() {
    let mut m = ac(Some(current("a", T0, 60)), Some("rt"));
    let fx = m.handle(Event::Start, T0 + secs(60), 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken));
}

/// A server that issues tokens already expired (or expiring as they arrive) is not asked again
/// on a timer, which would loop against it; the next client that asks starts the next request.
#[test]
fn a_token_that_arrives_expired_schedules_no_refresh() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 2, None)), T0 + secs(2), 0.0);
    assert_eq!(m.phase(), &Phase::Empty);
    assert_eq!(m.deadline(), None);
    assert_eq!(m.blocked_error(), None, "clients wait for the request they start");
    let fx = m.handle(Event::Demand(T0 + secs(3)), T0 + secs(2), 0.0);
    assert_eq!(fx.request, Some(RequestKind::ClientCredentials));
}

#[test]
fn a_failed_login_without_any_token_still_needs_a_login() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    exchange(&mut m, T0);
    let fx = m.handle(Event::Failed(upstream(Retry::Transient, None)), T0, 0.0);
    assert!(matches!(&fx.replies[..], [(_, Err(Error::Upstream { .. })), ..]), "the login waiter is told");
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert!(matches!(m.blocked_error(), Some(Error::LoginNeeded { .. })), "clients do not wait in vain");
}

#[test]
fn a_failed_login_does_not_bring_back_a_rejected_token() {
    let mut m = ac(Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Invalidate(Fingerprint::of("a")), T0, 0.0);
    exchange(&mut m, T0);
    m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0, 0.0);
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert_eq!(m.deadline(), None, "no refresh is scheduled for it");
    assert!(m.servable("movemint").is_none());
    assert!(m.status(T0).token.is_none());
}

#[test]
fn status_in_backoff_says_whether_a_token_is_still_served() {
    let mut m = ac(Some(current("a", T0, 600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Due, T0 + secs(300), 0.0);
    m.handle(Event::Failed(upstream(Retry::Transient, None)), T0 + secs(300), 0.0);
    let action = m.status(T0 + secs(300)).action.unwrap();
    assert!(action.contains("while the current token lasts"), "{action}");
    let action = m.status(T0 + secs(600)).action.unwrap();
    assert!(action.starts_with("no valid token"), "{action}");
}

#[test]
fn the_end_a_server_states_is_watched_for_from_the_answer_that_states_it() {
    let answer = TokenSet { refresh_expiry: Some(refresh_expiry(1000, 1000)), ..set("a", T0, 3600, Some("rt")) };
    let m = logged_in(tuning(), answer);
    assert_eq!(m.wake_at(), Some(T0 + secs(900)), "woken for the warning, before the refresh at 3300 s");
}

#[test]
fn without_a_refresh_token_a_due_refresh_says_at_once_that_a_login_is_needed() {
    let tuning = Tuning { quiet_window: secs(2), ..tuning() };
    let mut m = M::new("movemint", Grant::AuthorizationCode, tuning, Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    let fx = m.handle(Event::Due, due, 0.0);
    assert_eq!(
        fx.login_needed.as_deref(),
        Some("no refresh token is held"),
        "no window for a refresh that cannot be made"
    );
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert!(m.servable("movemint").is_some(), "the token is served while it lasts");
}

#[test]
fn status_tells_to_log_in_again_only_once_the_login_s_end_is_near() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let mut m = logged_in(tuning, set("a", T0, 3600, Some("rt")));
    let status = m.status(T0 + secs(899));
    assert!(status.login_expiry.is_some(), "the end is shown");
    assert_eq!(status.action, None, "but nothing to do yet");
    m.handle(Event::Due, T0 + secs(900), 0.0);
    assert!(m.status(T0 + secs(900)).action.unwrap().contains("tokenctl login movemint"));
}
