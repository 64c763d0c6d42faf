use super::*;
use crate::oauth::Retry;

pub(super) const T0: SystemTime = SystemTime::UNIX_EPOCH;

pub(super) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The machine under test: its waiters are numbers.
pub(super) type M = Machine<u32>;

pub(super) fn tuning() -> Tuning {
    Tuning {
        refresh_margin: secs(300),
        retry_min: secs(1),
        retry_max: secs(300),
        quiet_window: Duration::ZERO,
        login_timeout: secs(300),
        login_lifetime: None,
    }
}

pub(super) fn set(token: &str, obtained: SystemTime, lifetime: u64, refresh: Option<&str>) -> TokenSet {
    TokenSet {
        access_token: Secret::from(token),
        token_type: "Bearer".into(),
        obtained_at: obtained,
        expires_at: obtained + secs(lifetime),
        refresh_token: refresh.map(Secret::from),
        scope: None,
        refresh_expiry: None,
    }
}

pub(super) fn current(token: &str, obtained: SystemTime, lifetime: u64) -> Current {
    Current::from_set(&set(token, obtained, lifetime, None))
}

pub(super) fn upstream(retry: Retry, error: Option<&str>) -> UpstreamError {
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

pub(super) fn cc() -> M {
    M::new("minut", Grant::ClientCredentials, tuning(), None, None)
}

pub(super) fn ac(token: Option<Current>, refresh: Option<&str>) -> M {
    M::new("movemint", Grant::AuthorizationCode, tuning(), token, refresh.map(Secret::from))
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
    m.handle(Event::Force(1), T0, 0.0);
    let generation = m.generation();
    let fx = m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0, 0.0);
    assert!(fx.persist);
    assert!(fx.login_needed.is_some());
    assert!(
        matches!(&fx.replies[..], [(1, Err(Error::LoginNeeded { .. }))]),
        "the refresh by hand is told to log in: {:?}",
        fx.replies
    );
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
    let status = m.status(T0);
    assert!(status.action.unwrap().contains("client_secret"));
    assert_eq!(m.handle(Event::Force(1), T0, 0.0).request, Some(RequestKind::RefreshToken), "the user may retry");
}

#[test]
fn force_joins_a_request_in_flight() {
    let mut m = cc();
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Force(1), T0, 0.0);
    assert_eq!(fx.request, None);
    assert_eq!(fx.replies, vec![]);
    let fx = m.handle(Event::Obtained(set("a", T0, 3600, None)), T0, 0.0);
    assert_eq!(fx.replies, vec![(1, Ok(()))], "answered when the request it joined finishes");
}

#[test]
fn force_without_a_refresh_token_says_login_is_needed() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Force(1), T0, 0.0);
    assert!(matches!(&fx.replies[..], [(1, Err(Error::LoginNeeded { .. }))]), "{:?}", fx.replies);
}

#[test]
fn a_failed_code_exchange_leaves_the_profile_as_it_was() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    assert_eq!(
        m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, T0, 0.0).request,
        Some(RequestKind::CodeExchange)
    );
    let fx = m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0, 0.0);
    assert!(
        matches!(&fx.replies[..], [(10, Err(Error::Upstream { .. })), (11, Err(Error::Upstream { .. }))]),
        "{:?}",
        fx.replies
    );
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

/// Every state a profile can be in when its token "a" (obtained at T0, expiring at T0+10s)
/// expires, and how it got there.
fn states_at_expiry() -> Vec<(&'static str, M)> {
    let expiring = || set("a", T0, 10, None);
    let fetched = || {
        let mut m = cc();
        m.handle(Event::Start, T0, 0.0);
        m.handle(Event::Obtained(expiring()), T0, 0.0);
        m
    };
    let refreshing = || {
        let mut m = fetched();
        m.handle(Event::Due, T0 + secs(5), 0.0);
        m
    };
    let backing_off = {
        let mut m = refreshing();
        let busy = UpstreamError { retry_after: Some(secs(60)), ..upstream(Retry::Transient, None) };
        m.handle(Event::Failed(busy), T0 + secs(9), 0.0);
        m
    };
    let failed = {
        let mut m = refreshing();
        m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_client"))), T0 + secs(5), 0.0);
        m
    };
    let rejected = {
        let mut m = fetched();
        m.handle(Event::Invalidate(Fingerprint::of("a")), T0 + secs(1), 0.0);
        m.handle(Event::Failed(upstream(Retry::Transient, None)), T0 + secs(1), 0.0);
        m
    };
    let quiet = {
        let tuning = Tuning { quiet_window: secs(2), ..tuning() };
        let token = Current::from_set(&expiring());
        let mut m = M::new("movemint", Grant::AuthorizationCode, tuning, Some(token), Some(Secret::from("rt")));
        m.handle(Event::Start, T0, 0.0);
        m.handed_out(Some(T0 + secs(5)));
        m.handle(Event::Due, T0 + secs(5), 0.0);
        m
    };
    let arrived_expired = {
        let mut m = cc();
        m.handle(Event::Start, T0, 0.0);
        m.handle(Event::Obtained(expiring()), T0 + secs(11), 0.0);
        m
    };
    let restored_without_refresh_token = ac(Some(Current::from_set(&expiring())), None);
    let restored = ac(Some(Current::from_set(&expiring())), Some("rt"));
    vec![
        ("valid, its timer missed (a machine that slept)", fetched()),
        ("refreshing", refreshing()),
        ("backing off until after its expiry", backing_off),
        ("failed for good", failed),
        ("rejected, its replacement failing", rejected),
        ("in a quiet window", quiet),
        ("obtained already expired", arrived_expired),
        ("restored from disk, with no refresh token", restored_without_refresh_token),
        ("restored from disk", restored),
    ]
}

#[test]
fn an_expired_token_is_never_servable_in_any_state() {
    let expiry = T0 + secs(10);
    for now in [expiry, expiry + secs(1), expiry + secs(3600)] {
        for (state, mut m) in states_at_expiry() {
            let at = now.duration_since(T0).unwrap();
            // What the actor feeds the machine when a client asks at `now`: the restored
            // profile's start, the client's demand, and the timer if it is due.
            if state.starts_with("restored") {
                m.handle(Event::Start, now, 0.0);
            }
            let demand = m.handle(Event::Demand(now + secs(1)), now, 0.0);
            let due = match m.deadline() {
                Some(deadline) if deadline <= now => m.handle(Event::Due, now, 0.0),
                _ => Effects::default(),
            };
            // The token offered for serving, if any, carries its real expiry, so that the
            // serving side's check by the wall clock refuses it.
            if let Some(token) = m.servable("movemint") {
                assert_eq!(token.expires_at, expiry, "{state}, at {at:?}");
            }
            assert_ne!(m.status(now).state, ProfileState::Valid, "{state}, at {at:?}: shown as valid");
            assert!(m.status(now).token.is_none_or(|t| t.expires_at == expiry), "{state}, at {at:?}");
            // And the client is not left waiting for nothing: a new token is on its way, or the
            // machine says why none will come.
            let requesting = demand.request.is_some() || due.request.is_some();
            let in_flight = matches!(m.phase(), Phase::Refreshing(_));
            assert!(
                requesting || in_flight || m.blocked_error().is_some(),
                "{state}, at {at:?}: a client would wait with no request coming: {:?}",
                m.phase()
            );
        }
    }
}

/// Starts login `id` at `now`, with `waiter` waiting for its outcome.
fn start_login(m: &mut M, id: u64, waiter: u32, now: SystemTime) {
    let fx = m.handle(Event::LoginStarted { id, verifier: "v".into(), waiter }, now, 0.0);
    assert_eq!(fx, Effects::default(), "starting a login changes nothing else");
}

/// Starts login 99 (its waiter is 99) and hands it its code, which starts the exchange unless a
/// request is in flight.
pub(super) fn exchange(m: &mut M, now: SystemTime) -> Effects<u32> {
    m.handle(Event::LoginStarted { id: 99, verifier: "v".into(), waiter: 99 }, now, 0.0);
    m.handle(Event::Code { login: 99, code: "code".into(), waiter: 98 }, now, 0.0)
}

#[test]
fn status_reports_what_to_do() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    let status = m.status(T0);
    assert_eq!(status.state, ProfileState::NeedsLogin);
    assert!(status.action.unwrap().contains("tokenctl login movemint"));
}

fn quiet(window: Duration) -> M {
    let tuning = Tuning { quiet_window: window, ..tuning() };
    M::new("movemint", Grant::AuthorizationCode, tuning, Some(current("a", T0, 3600)), Some(Secret::from("rt")))
}

/// A profile holding token "a" (T0 to T0+1h) with a 2-second quiet window, at its refresh time.
fn quiet_at_refresh_time() -> (M, SystemTime) {
    let mut m = quiet(secs(2));
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    assert_eq!(due, T0 + secs(3300));
    (m, due)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_due_refresh_withholds_the_token_instead_of_sending_the_request() {
    let (mut m, due) = quiet_at_refresh_time();
    let fx = m.handle(Event::Due, due, 0.0);
    assert_eq!(fx.request, None, "never in the same step that withholds the token");
    assert_eq!(m.phase(), &Phase::Quiet { since: due, send_at: due });
    assert!(m.servable("movemint").is_none(), "the old token is no longer handed out");
    assert_eq!(m.blocked_error(), None, "clients wait for the new token");
    let status = m.status(due);
    assert_eq!(status.state, ProfileState::Quiet);
    assert!(status.token.is_some(), "status still shows the token held");
}

#[test]
fn an_idle_profile_sends_the_refresh_at_the_first_check() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handed_out(Some(T0 + secs(60)));
    m.handle(Event::Due, due, 0.0);
    assert_eq!(m.handle(Event::Due, due, 0.0).request, Some(RequestKind::RefreshToken));
    assert!(m.servable("movemint").is_none(), "still withheld while the request is in flight");
}

#[test]
fn the_request_waits_until_a_window_after_the_last_hand_out() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    // Handed out just before the window began, as the serving side reports at the check.
    m.handed_out(Some(due - ms(500)));
    assert_eq!(m.handle(Event::Due, due, 0.0).request, None);
    assert_eq!(m.deadline(), Some(due + ms(1500)));
    assert_eq!(m.handle(Event::Due, due + ms(1499), 0.0).request, None);
    assert_eq!(m.handle(Event::Due, due + ms(1500), 0.0).request, Some(RequestKind::RefreshToken));
}

#[test]
fn the_window_lasts_at_most_its_length_and_never_past_the_token_s_expiry() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handed_out(Some(due + secs(3600)));
    m.handle(Event::Due, due, 0.0);
    assert_eq!(m.deadline(), Some(due + secs(2)), "nothing is handed out during the window");

    let tuning = Tuning { quiet_window: secs(600), ..tuning() };
    let mut m = M::new("movemint", Grant::AuthorizationCode, tuning, Some(current("a", T0, 3600)), Some("rt".into()));
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    m.handed_out(Some(due));
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::Due, due, 0.0);
    assert_eq!(m.deadline(), Some(T0 + secs(3600)), "nobody can use the token after it expires");
}

#[test]
fn short_lived_tokens_get_a_window_of_an_eighth_of_their_life() {
    let mut m = M::new(
        "movemint",
        Grant::AuthorizationCode,
        Tuning { quiet_window: secs(2), ..tuning() },
        Some(current("a", T0, 4)),
        Some("rt".into()),
    );
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    assert_eq!(due, T0 + secs(2));
    m.handed_out(Some(due));
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::Due, due, 0.0);
    assert_eq!(m.deadline(), Some(due + ms(500)));
}

#[test]
fn an_invalidation_skips_the_window_and_ends_one_under_way() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handed_out(Some(due));
    m.handle(Event::Due, due, 0.0);
    let fx = m.handle(Event::Invalidate(Fingerprint::of("a")), due + ms(10), 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken), "the server refused it already");

    let (mut m, _) = quiet_at_refresh_time();
    let fx = m.handle(Event::Invalidate(Fingerprint::of("a")), T0 + secs(10), 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken));
}

#[test]
fn a_refresh_by_hand_goes_through_the_window_and_joins_one_under_way() {
    let (mut m, _) = quiet_at_refresh_time();
    let now = T0 + secs(10);
    let fx = m.handle(Event::Force(1), now, 0.0);
    assert_eq!((fx.request, fx.replies), (None, vec![]), "answered when the new token is there");
    let window = m.phase().clone();
    assert!(matches!(window, Phase::Quiet { .. }));
    let fx = m.handle(Event::Force(2), now + ms(100), 0.0);
    assert_eq!((fx.request, fx.replies), (None, vec![]));
    assert_eq!(m.phase(), &window, "the window under way goes on as it was");
    assert_eq!(m.handle(Event::Due, now, 0.0).request, Some(RequestKind::RefreshToken));
    let fx = m.handle(Event::Obtained(set("b", now, 3600, Some("rt2"))), now, 0.0);
    assert_eq!(fx.replies, vec![(1, Ok(())), (2, Ok(()))]);
    assert_eq!(m.servable("movemint").unwrap().access_token.expose(), "b");
}

#[test]
fn a_demand_beyond_the_current_token_goes_through_the_window() {
    let (mut m, _) = quiet_at_refresh_time();
    let now = T0 + secs(10);
    assert_eq!(m.handle(Event::Demand(T0 + secs(7200)), now, 0.0).request, None);
    assert!(matches!(m.phase(), Phase::Quiet { .. }));
    assert!(m.servable("movemint").is_none());
}

#[test]
fn one_request_at_a_time_through_a_window() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handed_out(Some(due));
    for event in [Event::Demand(due + secs(7200)), Event::Force(1), Event::Due] {
        assert_eq!(m.handle(event, due, 0.0).request, None, "the window is not cut short");
    }
    let end = due + secs(2);
    assert_eq!(m.handle(Event::Due, end, 0.0).request, Some(RequestKind::RefreshToken));
    for event in [Event::Demand(end + secs(7200)), Event::Force(1), Event::Due] {
        assert_eq!(m.handle(event, end, 0.0).request, None, "one request in flight");
    }
}

#[test]
fn after_a_transient_failure_the_old_token_is_served_again_and_the_retry_waits_again() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::Failed(upstream(Retry::Transient, None)), due, 1.0);
    assert_eq!(m.phase(), &Phase::Backoff { retry_at: due + secs(1) });
    assert_eq!(m.servable("movemint").unwrap().access_token.expose(), "a");
    let retry = due + secs(1);
    assert_eq!(m.handle(Event::Due, retry, 0.0).request, None);
    assert!(m.servable("movemint").is_none());
    m.handed_out(Some(retry - ms(200)));
    assert_eq!(m.handle(Event::Due, retry, 0.0).request, None);
    assert_eq!(m.handle(Event::Due, retry + ms(1800), 0.0).request, Some(RequestKind::RefreshToken));
}

#[test]
fn a_token_nobody_can_use_is_refreshed_without_a_window() {
    let mut m = quiet(secs(2));
    m.handle(Event::Start, T0, 0.0);
    let expired = T0 + secs(3601);
    assert_eq!(m.handle(Event::Demand(expired + secs(60)), expired, 0.0).request, Some(RequestKind::RefreshToken));

    let mut m = M::new("movemint", Grant::AuthorizationCode, tuning(), None, Some("rt".into()));
    let fx = m.handle(Event::Start, T0, 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken));
}

#[test]
fn a_zero_window_refreshes_at_once() {
    let mut m = quiet(Duration::ZERO);
    m.handle(Event::Start, T0, 0.0);
    m.handed_out(Some(T0 + secs(3300)));
    assert_eq!(m.handle(Event::Due, T0 + secs(3300), 0.0).request, Some(RequestKind::RefreshToken));
    assert!(m.servable("movemint").is_some(), "without a window the token is served until replaced");
}

#[test]
fn a_client_credentials_profile_with_a_window_waits_too() {
    let tuning = Tuning { quiet_window: secs(2), ..tuning() };
    let mut m = M::new("minut", Grant::ClientCredentials, tuning, Some(current("a", T0, 3600)), None);
    m.handle(Event::Start, T0, 0.0);
    let due = m.deadline().unwrap();
    assert_eq!(m.handle(Event::Due, due, 0.0).request, None);
    assert_eq!(m.handle(Event::Due, due, 0.0).request, Some(RequestKind::ClientCredentials));
}

#[test]
fn a_clock_set_back_past_the_window_s_start_ends_it() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handed_out(Some(due));
    m.handle(Event::Due, due, 0.0);
    assert_eq!(m.handle(Event::Due, due - secs(3600), 0.0).request, Some(RequestKind::RefreshToken));
}

#[test]
fn a_login_during_a_window_replaces_the_token() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    start_login(&mut m, 1, 10, due);
    assert_eq!(
        m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, due, 0.0).request,
        Some(RequestKind::CodeExchange)
    );
    let fx = m.handle(Event::Obtained(set("b", due, 3600, Some("rt2"))), due, 0.0);
    assert_eq!(fx.replies, vec![(10, Ok(())), (11, Ok(()))]);
    assert_eq!(m.servable("movemint").unwrap().access_token.expose(), "b");
    assert!(matches!(m.phase(), Phase::Valid { .. }));
}

#[test]
fn logging_out_during_a_window_forgets_everything() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::LoggedOut, due, 0.0);
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert_eq!(m.deadline(), None);
}

/// The message of a `Login` error, or a description of what came instead.
fn login_message(outcome: &Result<(), Error>) -> String {
    match outcome {
        Err(Error::Login { message, .. }) => message.clone(),
        other => format!("not a login error: {other:?}"),
    }
}

#[test]
fn a_pending_login_shows_in_status_and_times_out_at_the_login_timeout() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    let until = T0 + secs(300);
    assert_eq!(m.login_pending_until(), Some(until));
    assert_eq!(m.status(T0).login_pending_until, Some(until));
    assert_eq!(m.deadline(), Some(until), "the actor wakes for the timeout");
    assert_eq!(m.status(T0).next_refresh, None, "the timeout is not a refresh");

    let fx = m.handle(Event::Due, until - secs(1), 0.0);
    assert_eq!(fx, Effects::default(), "not before the timeout");
    let fx = m.handle(Event::Due, until, 0.0);
    assert!(fx.close_listener);
    assert_eq!(fx.replies.len(), 1);
    assert_eq!(fx.replies[0].0, 10);
    assert!(login_message(&fx.replies[0].1).starts_with("no answer from the browser within 5m"), "{:?}", fx.replies);
    assert_eq!(m.login_pending_until(), None);
    assert_eq!(m.deadline(), None);
}

#[test]
fn the_login_timeout_comes_first_when_a_refresh_is_later() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    assert_eq!(m.deadline(), Some(T0 + secs(3300)));
    start_login(&mut m, 1, 10, T0);
    assert_eq!(m.deadline(), Some(T0 + secs(300)));
    assert_eq!(m.status(T0).next_refresh, Some(T0 + secs(3300)));
    let fx = m.handle(Event::Due, T0 + secs(300), 0.0);
    assert_eq!(fx.request, None, "the timeout does not refresh");
    assert!(fx.close_listener);
    assert_eq!(m.deadline(), Some(T0 + secs(3300)));
}

#[test]
fn a_newer_login_replaces_the_pending_one_and_its_code_is_refused() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    let fx = m.handle(Event::LoginStarted { id: 2, verifier: "v2".into(), waiter: 20 }, T0 + secs(60), 0.0);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![10]);
    assert_eq!(login_message(&fx.replies[0].1), SUPERSEDED);
    assert_eq!(m.login_pending_until(), Some(T0 + secs(360)), "the newer login has its own timeout");

    let fx = m.handle(Event::Code { login: 1, code: "old".into(), waiter: 11 }, T0 + secs(61), 0.0);
    assert_eq!(fx.request, None, "the old login's code is not exchanged");
    assert!(!fx.close_listener, "the newer login keeps listening");
    assert_eq!(fx.replies.len(), 1);
    assert_eq!(fx.replies[0].0, 11);
    assert!(login_message(&fx.replies[0].1).contains("no longer pending"), "{:?}", fx.replies);

    let fx = m.handle(Event::Code { login: 2, code: "new".into(), waiter: 21 }, T0 + secs(62), 0.0);
    assert_eq!(fx.request, Some(RequestKind::CodeExchange));
    assert!(fx.close_listener);
    let (code, verifier) = m.exchange_grant().unwrap();
    assert_eq!((code.expose(), verifier.expose()), ("new", "v2"));
}

#[test]
fn a_code_without_a_pending_login_is_refused() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    let fx = m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, T0, 0.0);
    assert_eq!(fx.request, None);
    assert!(matches!(&fx.replies[..], [(11, Err(Error::Login { .. }))]), "{:?}", fx.replies);
    assert_eq!(m.exchange_grant(), None);
}

#[test]
fn a_code_during_a_request_is_queued_and_exchanged_when_the_request_lands() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    assert_eq!(m.handle(Event::Force(1), T0, 0.0).request, Some(RequestKind::RefreshToken));
    start_login(&mut m, 7, 10, T0);
    let fx = m.handle(Event::Code { login: 7, code: "c".into(), waiter: 11 }, T0, 0.0);
    assert_eq!(fx.request, None, "one request at a time");
    assert!(fx.close_listener, "the browser has brought the code");
    assert_eq!(fx.replies, vec![]);
    assert_eq!(m.login_pending_until(), Some(T0 + secs(300)), "status still shows the login");

    let fx = m.handle(Event::Obtained(set("b", T0, 3600, Some("rt2"))), T0, 0.0);
    assert_eq!(fx.request, Some(RequestKind::CodeExchange), "the queued exchange starts in the same step");
    assert_eq!(fx.replies, vec![(1, Ok(()))], "the refresh by hand is answered by its own request");
    assert_eq!(m.phase(), &Phase::Refreshing(RequestKind::CodeExchange));

    let fx = m.handle(Event::Obtained(set("c", T0, 3600, Some("rt3"))), T0, 0.0);
    assert_eq!(fx.replies, vec![(10, Ok(())), (11, Ok(()))]);
    assert_eq!(m.servable("movemint").unwrap().access_token.expose(), "c");
    assert_eq!(m.refresh_token().unwrap().expose(), "rt3");
    assert_eq!(m.login_pending_until(), None);
}

#[test]
fn a_newer_code_replaces_a_queued_one() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Force(1), T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    m.handle(Event::Code { login: 1, code: "first".into(), waiter: 11 }, T0, 0.0);
    start_login(&mut m, 2, 20, T0);
    let fx = m.handle(Event::Code { login: 2, code: "second".into(), waiter: 21 }, T0, 0.0);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![10, 11]);
    assert!(fx.replies.iter().all(|(_, outcome)| login_message(outcome) == SUPERSEDED), "{:?}", fx.replies);

    m.handle(Event::Obtained(set("b", T0, 3600, Some("rt2"))), T0, 0.0);
    assert_eq!(m.exchange_grant().unwrap().0.expose(), "second");
}

#[test]
fn a_refused_login_tells_its_waiters_and_ends() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    let fx = m.handle(Event::LoginRefused { login: 2, message: "stale".into(), waiter: Some(30) }, T0, 0.0);
    assert_eq!(fx, Effects::default(), "news from another login changes nothing");
    let fx = m.handle(Event::LoginRefused { login: 1, message: "access_denied".into(), waiter: Some(11) }, T0, 0.0);
    assert!(fx.close_listener);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![11, 10]);
    assert!(fx.replies.iter().all(|(_, outcome)| login_message(outcome) == "access_denied"), "{:?}", fx.replies);
    assert_eq!(m.login_pending_until(), None);
    assert_eq!(m.status(T0).state, ProfileState::NeedsLogin, "the profile is as it was");
}

#[test]
fn a_cancelled_login_tells_its_waiters_why() {
    let mut m = ac(None, None);
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    let fx = m.handle(Event::CancelLogin("because".into()), T0, 0.0);
    assert!(fx.close_listener);
    assert_eq!(fx.replies.len(), 1);
    assert_eq!(login_message(&fx.replies[0].1), "because");
    assert_eq!(m.handle(Event::CancelLogin("again".into()), T0, 0.0), Effects::default());
}

#[test]
fn logout_ends_a_pending_login() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::Force(1), T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, T0, 0.0);
    start_login(&mut m, 2, 20, T0);
    m.handle(Event::Obtained(set("b", T0, 3600, Some("rt2"))), T0, 0.0);
    // The actor lands the request in flight before it logs out.
    let fx = m.handle(Event::Failed(upstream(Retry::Transient, None)), T0, 0.0);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![10, 11], "the exchange failed");
    let fx = m.handle(Event::LoggedOut, T0, 0.0);
    assert!(fx.persist);
    assert!(fx.close_listener);
    assert_eq!(fx.request, None);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![20]);
    assert_eq!(login_message(&fx.replies[0].1), "logged out");
    assert_eq!(m.login_pending_until(), None);
    assert_eq!(m.deadline(), None);
}

#[test]
fn logout_tells_a_queued_exchange_and_waiters_of_a_window() {
    let (mut m, due) = quiet_at_refresh_time();
    m.handle(Event::Due, due, 0.0);
    m.handle(Event::Force(1), due, 0.0);
    m.handle(Event::Due, due + secs(2), 0.0);
    start_login(&mut m, 1, 10, due);
    m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, due, 0.0);
    let fx = m.handle(Event::LoggedOut, due, 0.0);
    assert!(!fx.close_listener, "the listener closed when the code came");
    let waiters: Vec<u32> = fx.replies.iter().map(|(w, _)| *w).collect();
    assert_eq!(waiters, vec![10, 11, 1]);
    assert_eq!(login_message(&fx.replies[0].1), "logged out");
    assert!(matches!(fx.replies[2].1, Err(Error::LoginNeeded { .. })), "{:?}", fx.replies);
    assert_eq!(m.exchange_grant(), None);
}

#[test]
fn stopping_ends_the_login_and_every_exchange() {
    let mut m = ac(Some(current("a", T0, 3600)), Some("rt"));
    m.handle(Event::Start, T0, 0.0);
    start_login(&mut m, 1, 10, T0);
    m.handle(Event::Code { login: 1, code: "c".into(), waiter: 11 }, T0, 0.0);
    start_login(&mut m, 2, 20, T0);
    let fx = m.handle(Event::Stop("the profile was reloaded".into()), T0, 0.0);
    assert!(fx.close_listener);
    assert_eq!(fx.request, None, "no request once stopped");
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![20, 10, 11]);
    assert!(fx.replies.iter().all(|(_, o)| login_message(o) == "the profile was reloaded"), "{:?}", fx.replies);
    assert_eq!(m.login_pending_until(), None);
}

/// A machine logged in at `T0` with a code exchange whose answer is `answer`.
pub(super) fn logged_in(tuning: Tuning, answer: TokenSet) -> M {
    let mut m = M::new("movemint", Grant::AuthorizationCode, tuning, None, None);
    m.handle(Event::Start, T0, 0.0);
    exchange(&mut m, T0);
    let fx = m.handle(Event::Obtained(answer), T0, 0.0);
    assert!(fx.persist);
    m
}

pub(super) fn refresh_expiry(expires: u64, lifetime: u64) -> crate::oauth::token::RefreshExpiry {
    crate::oauth::token::RefreshExpiry {
        expires_at: T0 + secs(expires),
        lifetime: secs(lifetime),
        source: tokend_proto::LoginExpirySource::RefreshExpiresIn,
    }
}

#[test]
fn login_lifetime_counts_from_the_login_and_is_warned_about_once() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let mut m = logged_in(tuning, set("a", T0, 3600, Some("rt")));
    let expiry = m.status(T0).login_expiry.unwrap();
    assert_eq!((expiry.expires_at, expiry.warn_at, expiry.warned), (T0 + secs(1000), T0 + secs(900), false));
    assert_eq!(m.wake_at(), Some(T0 + secs(900)), "woken for the warning before the refresh");
    let fx = m.handle(Event::Due, T0 + secs(900), 0.0);
    assert_eq!(fx.login_expiring, Some(T0 + secs(1000)));
    assert!(fx.persist, "the warning is saved, so a restart does not repeat it");
    assert!(m.status(T0 + secs(900)).login_expiry.unwrap().warned);
    assert!(m.status(T0 + secs(900)).action.unwrap().contains("tokenctl login movemint"));
    assert_eq!(m.wake_at(), Some(T0 + secs(1000)), "next, the end");
    let fx = m.handle(Event::Due, T0 + secs(950), 0.0);
    assert_eq!(fx.login_expiring, None, "once");
}

#[test]
fn a_login_that_ended_needs_a_login_and_its_refresh_token_is_not_used() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let mut m = logged_in(tuning, set("a", T0, 3600, Some("rt")));
    let fx = m.handle(Event::Due, T0 + secs(1000), 0.0);
    assert_eq!(fx.request, None);
    assert!(fx.login_needed.unwrap().contains("the login expired"), "the user is told");
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    assert!(m.servable("movemint").is_some(), "the access token is served while it lasts");
    // Nothing that used to start a refresh does so now.
    for event in
        [Event::Due, Event::Force(1), Event::Demand(T0 + secs(5000)), Event::Invalidate(m.token().unwrap().fingerprint)]
    {
        let fx = m.handle(event, T0 + secs(1100), 0.0);
        assert_eq!(fx.request, None);
        assert_eq!(fx.login_needed, None, "told once");
    }
    assert!(matches!(m.blocked_error(), Some(Error::LoginNeeded { .. })));
    assert_eq!(m.refresh_token().unwrap().expose(), "rt", "kept: a reload with a longer login_lifetime revives it");
    assert_eq!(m.wake_at(), None, "nothing left to wake for");
    // A new login starts afresh.
    exchange(&mut m, T0 + secs(1200));
    m.handle(Event::Obtained(set("b", T0 + secs(1200), 3600, Some("rt2"))), T0 + secs(1200), 0.0);
    assert!(matches!(m.phase(), Phase::Valid { .. }));
    assert_eq!(m.status(T0 + secs(1200)).login_expiry.unwrap().expires_at, T0 + secs(2200));
}

#[test]
fn a_restart_after_the_end_needs_a_login_without_a_request() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let m = logged_in(tuning.clone(), set("a", T0, 100, Some("rt")));
    let login = *m.session();
    let mut restarted =
        M::new("movemint", Grant::AuthorizationCode, tuning, m.token().cloned(), Some("rt".into())).with_session(login);
    let fx = restarted.handle(Event::Start, T0 + secs(2000), 0.0);
    assert_eq!(fx.request, None);
    assert!(fx.login_needed.is_some(), "a login that ended while tokend was down is news");
    assert!(matches!(restarted.phase(), Phase::NeedsLogin { reason } if reason.contains("expired")));
}

#[test]
fn a_restart_does_not_warn_again() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let mut m = logged_in(tuning.clone(), set("a", T0, 3600, Some("rt")));
    assert!(m.handle(Event::Due, T0 + secs(900), 0.0).login_expiring.is_some());
    let mut restarted = M::new("movemint", Grant::AuthorizationCode, tuning, m.token().cloned(), Some("rt".into()))
        .with_session(*m.session());
    assert_eq!(restarted.handle(Event::Start, T0 + secs(910), 0.0).login_expiring, None);
}

#[test]
fn what_the_server_says_beats_login_lifetime_and_a_rotation_extends_the_login() {
    let tuning = Tuning { login_lifetime: Some(secs(99_999)), ..tuning() };
    let answer = TokenSet { refresh_expiry: Some(refresh_expiry(1000, 1000)), ..set("a", T0, 300, Some("rt")) };
    let mut m = logged_in(tuning, answer);
    let expiry = m.status(T0).login_expiry.unwrap();
    assert_eq!(expiry.expires_at, T0 + secs(1000));
    assert_eq!(expiry.source, tokend_proto::LoginExpirySource::RefreshExpiresIn);
    m.handle(Event::Due, T0 + secs(250), 0.0);
    assert_eq!(m.phase(), &Phase::Refreshing(RequestKind::RefreshToken));
    let rotated =
        TokenSet { refresh_expiry: Some(refresh_expiry(1250, 1000)), ..set("b", T0 + secs(250), 300, Some("rt2")) };
    m.handle(Event::Obtained(rotated), T0 + secs(250), 0.0);
    assert_eq!(m.status(T0).login_expiry.unwrap().expires_at, T0 + secs(1250));
    // An answer that says nothing keeps what was said.
    m.handle(Event::Due, T0 + secs(500), 0.0);
    m.handle(Event::Obtained(set("c", T0 + secs(500), 300, None)), T0 + secs(500), 0.0);
    assert_eq!(m.status(T0).login_expiry.unwrap().expires_at, T0 + secs(1250));
}

#[test]
fn a_dead_grant_or_a_logout_forgets_the_login() {
    let tuning = Tuning { login_lifetime: Some(secs(1000)), ..tuning() };
    let mut m = logged_in(tuning.clone(), set("a", T0, 100, Some("rt")));
    m.handle(Event::Due, T0 + secs(50), 0.0);
    m.handle(Event::Failed(upstream(Retry::Permanent, Some("invalid_grant"))), T0 + secs(50), 0.0);
    assert_eq!(m.status(T0).login_expiry, None);
    assert_eq!(m.wake_at(), None);
    let mut m = logged_in(tuning, set("a", T0, 100, Some("rt")));
    m.handle(Event::LoggedOut, T0 + secs(10), 0.0);
    assert_eq!(m.session(), &expiry::Login::default());
}

#[test]
fn a_device_login_s_tokens_keep_a_device_code_profile_alive_like_a_browser_login() {
    let mut m = M::new("tv", Grant::DeviceCode, tuning(), None, None);
    let fx = m.handle(Event::Start, T0, 0.0);
    assert_eq!(fx.request, None);
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
    let fx = m.handle(Event::DeviceLoginStarted { id: 1, until: T0 + secs(600), waiter: 10 }, T0, 0.0);
    assert_eq!(fx, Effects::default(), "starting a login changes nothing else");
    assert_eq!(m.login_pending_until(), Some(T0 + secs(600)));
    // The device login's tokens arrive from its polling, outside any request.
    let tokens = Box::new(set("at1", T0 + secs(5), 3600, Some("rt1")));
    let fx = m.handle(Event::DeviceTokens { login: 1, set: tokens }, T0 + secs(5), 0.0);
    assert!(fx.persist && fx.close_listener);
    assert_eq!(fx.replies, vec![(10, Ok(()))]);
    assert_eq!(m.login_pending_until(), None);
    assert_eq!(m.refresh_token().unwrap().expose(), "rt1");
    let fx = m.handle(Event::Due, T0 + secs(3600), 0.0);
    assert_eq!(fx.request, Some(RequestKind::RefreshToken));
    m.handle(Event::Obtained(set("at2", T0 + secs(3600), 3600, Some("rt2"))), T0 + secs(3600), 0.0);
    assert_eq!(m.refresh_token().unwrap().expose(), "rt2", "rotated");
    m.handle(Event::LoggedOut, T0 + secs(3700), 0.0);
    assert!(matches!(m.phase(), Phase::NeedsLogin { .. }));
}

#[test]
fn the_newest_login_of_either_kind_wins() {
    let mut m = M::new("tv", Grant::DeviceCode, tuning(), None, None);
    m.handle(Event::Start, T0, 0.0);
    m.handle(Event::DeviceLoginStarted { id: 1, until: T0 + secs(600), waiter: 10 }, T0, 0.0);
    let fx = m.handle(Event::DeviceLoginStarted { id: 2, until: T0 + secs(700), waiter: 20 }, T0 + secs(1), 0.0);
    assert_eq!(fx.replies.iter().map(|(w, _)| *w).collect::<Vec<_>>(), vec![10]);
    assert_eq!(login_message(&fx.replies[0].1), SUPERSEDED);
    let stale = Box::new(set("old", T0 + secs(2), 3600, Some("rt-old")));
    let fx = m.handle(Event::DeviceTokens { login: 1, set: stale }, T0 + secs(2), 0.0);
    assert_eq!(fx, Effects::default(), "a replaced login's tokens are not taken");
    assert!(m.servable("tv").is_none());
    let fx = m.handle(Event::Due, T0 + secs(700), 0.0);
    assert!(fx.close_listener, "the code's expiry ends the login");
    assert!(login_message(&fx.replies[0].1).contains("the code expired"), "{:?}", fx.replies);
}

#[test]
fn a_device_login_s_tokens_during_a_refresh_wait_for_its_outcome() {
    let mut m = M::new("tv", Grant::DeviceCode, tuning(), Some(current("a", T0, 3600)), Some("rt".into()));
    m.handle(Event::Start, T0, 0.0);
    assert_eq!(m.handle(Event::Force(1), T0, 0.0).request, Some(RequestKind::RefreshToken));
    m.handle(Event::DeviceLoginStarted { id: 1, until: T0 + secs(600), waiter: 10 }, T0, 0.0);
    let tokens = Box::new(set("new", T0, 3600, Some("rt-new")));
    let fx = m.handle(Event::DeviceTokens { login: 1, set: tokens }, T0, 0.0);
    assert_eq!(fx.replies, vec![], "queued behind the request in flight");
    let fx = m.handle(Event::Obtained(set("b", T0, 3600, Some("rt2"))), T0, 0.0);
    assert_eq!(fx.replies, vec![(1, Ok(())), (10, Ok(()))]);
    assert_eq!(m.servable("tv").unwrap().access_token.expose(), "new", "the older grant's answer does not win");
    assert_eq!(m.refresh_token().unwrap().expose(), "rt-new");
}
