use super::*;
use crate::oauth::Retry;

const T0: SystemTime = SystemTime::UNIX_EPOCH;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn tuning() -> Tuning {
    Tuning { refresh_margin: secs(300), retry_min: secs(1), retry_max: secs(300) }
}

fn set(token: &str, obtained: SystemTime, lifetime: u64, refresh: Option<&str>) -> TokenSet {
    TokenSet {
        access_token: Secret::from(token),
        token_type: "Bearer".into(),
        obtained_at: obtained,
        expires_at: obtained + secs(lifetime),
        refresh_token: refresh.map(Secret::from),
        scope: None,
    }
}

fn current(token: &str, obtained: SystemTime, lifetime: u64) -> Current {
    Current::from_set(&set(token, obtained, lifetime, None))
}

fn upstream(retry: Retry, error: Option<&str>) -> UpstreamError {
    UpstreamError {
        retry,
        status: Some(if retry == Retry::Transient { 503 } else { 400 }),
        error: error.map(str::to_owned),
        description: None,
        message: "test".into(),
        retry_after: None,
        rotated_refresh_token: None,
    }
}

fn cc() -> Machine {
    Machine::new("minut", Grant::ClientCredentials, tuning(), None, None)
}

fn ac(token: Option<Current>, refresh: Option<&str>) -> Machine {
    Machine::new("movemint", Grant::AuthorizationCode, tuning(), token, refresh.map(Secret::from))
}

#[test]
fn a_client_credentials_profile_fetches_at_start() {
    let mut m = cc();
    let fx = m.handle(Event::Start, T0, 0.0);
    assert_eq!(fx.request, Some(RequestKind::ClientCredentials));
    assert_eq!(m.phase(), &Phase::Refreshing(RequestKind::ClientCredentials));
}

#[test]
fn a_restored_valid_token_is_served_without_a_request() {
    let mut m = ac(Some(current("at", T0, 3600)), Some("rt"));
    let fx = m.handle(Event::Start, T0 + secs(10), 0.0);
    assert_eq!(fx.request, None);
    assert_eq!(m.phase(), &Phase::Valid { refresh_at: T0 + secs(3300) });
    assert!(m.servable("movemint").is_some());
}

#[test]
fn a_restored_expired_token_is_refreshed_with_the_refresh_token() {
    let mut m = ac(Some(current("at", T0, 60)), Some("rt"));
    let fx = m.handle(Event::Start, T0 + secs(61), 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken));
}

#[test]
fn an_authorization_code_profile_without_tokens_needs_a_login_quietly_at_start() {
    let mut m = ac(None, None);
    let fx = m.handle(Event::Start, T0, 0.0);
    assert_eq!(fx.request, None);
    assert_eq!(fx.login_needed, None);
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert!(matches!(m.blocked_error(), Some(Error::LoginNeeded { .. })));
}

#[test]
fn refresh_happens_when_due_and_not_before() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 3600, None)), T0, 0.0);
    assert_eq!(m.deadline(), Some(T0 + secs(3300)));
    assert_eq!(m.handle(Event::Due, T0 + secs(3299), 0.0).request, None);
    assert_eq!(m.handle(Event::Due, T0 + secs(3300), 0.0).request, Some(RequestKind::ClientCredentials));
}

#[test]
fn herd_of_demands_triggers_one_request() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 60, None)), T0, 0.0);
    let later = T0 + secs(59);
    let first = m.handle(Event::Demand(later + secs(30)), later, 0.0);
    assert_eq!(first.request, Some(RequestKind::ClientCredentials));
    for _ in 0..1000 {
        assert_eq!(m.handle(Event::Demand(later + secs(30)), later, 0.0).request, None);
    }
}

#[test]
fn a_demand_the_current_token_satisfies_is_ignored() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 3600, None)), T0, 0.0);
    assert_eq!(m.handle(Event::Demand(T0 + secs(60)), T0, 0.0).request, None);
}

#[test]
fn invalidate_refreshes_once_per_distinct_rejected_token() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 3600, None)), T0, 0.0);
    let fp = Fingerprint::of("a");
    assert_eq!(m.handle(Event::Invalidate(fp), T0, 0.0).request, Some(RequestKind::ClientCredentials));
    assert!(m.servable("minut").is_none(), "a rejected token is not served");
    assert_eq!(m.handle(Event::Invalidate(fp), T0, 0.0).request, None);
    m.handle(Event::Obtained(set("b", T0, 3600, None)), T0, 0.0);
    assert_eq!(
        m.handle(Event::Invalidate(fp), T0, 0.0).request,
        None,
        "a report about a replaced token changes nothing"
    );
    assert_eq!(m.servable("minut").unwrap().access_token.expose(), "b");
}

#[test]
fn a_rotated_refresh_token_replaces_the_old_one() {
    let mut m = ac(None, Some("rt1"));
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Obtained(set("a", T0, 60, Some("rt2"))), T0, 0.0);
    assert!(fx.persist);
    assert_eq!(m.refresh_token().unwrap().expose(), "rt2");
}

#[test]
fn a_response_without_refresh_token_keeps_the_old_one() {
    let mut m = ac(None, Some("rt1"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 60, None)), T0, 0.0);
    assert_eq!(m.refresh_token().unwrap().expose(), "rt1");
}

#[test]
fn a_rotated_refresh_token_in_an_unusable_answer_is_kept_and_the_failure_is_transient() {
    let mut m = ac(Some(current("a", T0, 600)), Some("rt1"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Due, T0 + secs(300), 0.0);
    let error = UpstreamError { rotated_refresh_token: Some(Secret::from("rt2")), ..upstream(Retry::Transient, None) };
    let fx = m.handle(Event::Failed(error), T0 + secs(300), 0.0);
    assert!(fx.persist, "saved at once");
    assert_eq!(m.refresh_token().unwrap().expose(), "rt2");
    assert!(matches!(m.phase(), Phase::Backoff { .. }));
    assert_eq!(m.servable("movemint").unwrap().access_token.expose(), "a", "the old token is still served");
    assert_eq!(m.handle(Event::Due, T0 + secs(301), 0.0).request, Some(RequestKind::RefreshToken));
}

#[test]
fn a_transient_failure_backs_off_and_keeps_everything() {
    let mut m = ac(Some(current("a", T0, 600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Due, T0 + secs(300), 0.0);
    let fx = m.handle(Event::Failed(upstream(Retry::Transient, None)), T0 + secs(300), 1.0);
    assert_eq!(fx.request, None);
    assert!(!fx.persist);
    assert_eq!(m.phase(), &Phase::Backoff { retry_at: T0 + secs(301) });
    assert_eq!(m.refresh_token().unwrap().expose(), "rt");
    assert!(m.servable("movemint").is_some(), "the still-valid token keeps being served");
    assert_eq!(m.handle(Event::Demand(T0 + secs(10_000)), T0 + secs(300), 0.0).request, None, "no retry storm");
    assert_eq!(m.handle(Event::Due, T0 + secs(301), 0.0).request, Some(RequestKind::RefreshToken));
    m.handle(Event::Failed(upstream(Retry::Transient, None)), T0 + secs(301), 1.0);
    assert_eq!(m.phase(), &Phase::Backoff { retry_at: T0 + secs(303) }, "the delay doubles");
}

#[test]
fn backoff_without_a_valid_token_tells_clients_since_when() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Failed(upstream(Retry::Transient, None)), T0, 0.0);
    match m.blocked_error() {
        Some(Error::UpstreamUnavailable { since, retry_at, .. }) => {
            assert_eq!(since, T0);
            assert_eq!(retry_at, Some(T0 + secs(1)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_grant_on_refresh_needs_a_login_and_drops_the_dead_grant() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Force, T0, 0.0);
    let generation = m.generation();
    let fx = m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0, 0.0);
    assert!(fx.persist);
    assert!(fx.login_needed.is_some());
    assert_eq!(m.refresh_token(), None);
    assert!(m.servable("p").is_none(), "the access token of the dead grant is not served");
    assert!(m.generation() > generation, "waiting clients see the change");
    assert_eq!(m.deadline(), None, "no retries");
    assert!(matches!(m.blocked_error(), Some(Error::LoginNeeded { .. })));
}

#[test]
fn invalid_client_stops_retries_but_keeps_the_refresh_token() {
    let mut m = ac(None, Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_client"))), T0, 0.0);
    assert_eq!(m.phase(), &Phase::Failed);
    assert_eq!(m.deadline(), None);
    assert_eq!(m.refresh_token().unwrap().expose(), "rt");
    let status = m.status(T0, None);
    assert!(status.action.unwrap().contains("client_secret"));
    assert_eq!(m.handle(Event::Force, T0, 0.0).request, Some(RequestKind::RefreshToken), "the user may retry");
}

#[test]
fn force_joins_a_request_in_flight() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Force, T0, 0.0);
    assert_eq!(fx.request, None);
    assert_eq!(fx.finished, None);
}

#[test]
fn force_without_a_refresh_token_says_login_is_needed() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Force, T0, 0.0);
    assert!(matches!(fx.finished, Some(Err(Error::LoginNeeded { .. }))));
}

#[test]
fn a_failed_code_exchange_leaves_the_profile_as_it_was() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Exchange, T0, 0.0);
    let fx = m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0, 0.0);
    assert!(matches!(fx.finished, Some(Err(_))));
    assert_eq!(m.refresh_token().unwrap().expose(), "rt");
    assert!(matches!(m.phase(), Phase::Valid { .. }));
}

#[test]
fn logout_forgets_everything() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::LoggedOut, T0, 0.0);
    assert!(fx.persist);
    assert!(m.token().is_none() && m.refresh_token().is_none());
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
}

#[test]
fn an_expired_token_is_never_servable_as_valid_state() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Obtained(set("a", T0, 10, None)), T0, 0.0);
    // The machine keeps the token, but the actor checks expiry at serving time; a demand for
    // any time past expiry starts a refresh.
    let fx = m.handle(Event::Demand(T0 + secs(11)), T0 + secs(11), 0.0);
    assert_eq!(fx.request, Some(RequestKind::ClientCredentials));
}

#[test]
fn status_reports_what_to_do() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    let status = m.status(T0, None);
    assert_eq!(status.state, ProfileState::NeedsLogin);
    assert!(status.action.unwrap().contains("tokenctl login movemint"));
}
