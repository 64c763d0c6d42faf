//! Property tests: every message survives encoding and decoding, every proper prefix of a frame
//! is incomplete, and arbitrary bytes never make decoding panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use tokend_proto::codec::{self, HEADER_LEN, MAX_FRAME_LEN};
use tokend_proto::{
    Error, Event, Failure, Fingerprint, Grant, Hello, HelloReply, LoginExpiry, LoginExpirySource, Pong, ProfileState,
    ProfileStatus, ProfileSummary, ReloadSummary, Request, Response, RevocationOutcome, RevocationReport, Secret,
    Token, TokenSummary,
};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn time() -> impl Strategy<Value = SystemTime> {
    (0u64..4_000_000_000_000).prop_map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..10_000_000_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

fn fingerprint() -> impl Strategy<Value = Fingerprint> {
    any::<[u8; 16]>().prop_map(Fingerprint)
}

fn grant() -> impl Strategy<Value = Grant> {
    prop_oneof![Just(Grant::ClientCredentials), Just(Grant::AuthorizationCode), Just(Grant::DeviceCode)]
}

fn state() -> impl Strategy<Value = ProfileState> {
    prop_oneof![
        Just(ProfileState::Empty),
        Just(ProfileState::Valid),
        Just(ProfileState::Refreshing),
        Just(ProfileState::Backoff),
        Just(ProfileState::NeedsLogin),
        Just(ProfileState::Failed),
        Just(ProfileState::Quiet),
    ]
}

fn failure() -> impl Strategy<Value = Failure> {
    (time(), option::of(any::<u16>()), option::of(text()), option::of(text()), text(), any::<bool>()).prop_map(
        |(at, status, error, description, message, transient)| Failure {
            at,
            status,
            error,
            description,
            message,
            transient,
        },
    )
}

fn token() -> impl Strategy<Value = Token> {
    (text(), text(), text(), time(), fingerprint(), option::of(text())).prop_map(
        |(profile, access_token, token_type, expires_at, fingerprint, scope)| Token {
            profile,
            access_token: Secret::new(access_token),
            token_type,
            expires_at,
            fingerprint,
            scope,
        },
    )
}

fn status() -> impl Strategy<Value = ProfileStatus> {
    let summary = (fingerprint(), text(), time(), time(), option::of(text())).prop_map(
        |(fingerprint, token_type, obtained_at, expires_at, scope)| TokenSummary {
            fingerprint,
            token_type,
            obtained_at,
            expires_at,
            scope,
        },
    );
    (
        (text(), grant(), state(), option::of(summary), option::of(time()), any::<bool>()),
        (option::of(failure()), option::of(time()), option::of(text()), any::<u64>(), option::of(time())),
        option::of(login_expiry().prop_map(Box::new)),
    )
        .prop_map(
            |(
                (name, grant, state, token, next_refresh, has_refresh_token),
                (last_error, failing_since, action, upstream_requests, login_pending_until),
                login_expiry,
            )| ProfileStatus {
                name,
                grant,
                state,
                token,
                next_refresh,
                has_refresh_token,
                last_error,
                failing_since,
                action,
                upstream_requests,
                login_pending_until,
                login_expiry,
            },
        )
}

fn login_expiry() -> impl Strategy<Value = LoginExpiry> {
    let source = prop_oneof![
        Just(LoginExpirySource::RefreshExpiresIn),
        Just(LoginExpirySource::RefreshTokenExp),
        Just(LoginExpirySource::LoginLifetime),
    ];
    (time(), source, time(), any::<bool>()).prop_map(|(expires_at, source, warn_at, warned)| LoginExpiry {
        expires_at,
        source,
        warn_at,
        warned,
    })
}

fn error() -> impl Strategy<Value = Error> {
    prop_oneof![
        (text(), vec(text(), 0..4)).prop_map(|(profile, known)| Error::UnknownProfile { profile, known }),
        (text(), text()).prop_map(|(profile, reason)| Error::LoginNeeded { profile, reason }),
        (text(), failure()).prop_map(|(profile, f)| Error::Upstream { profile, failure: Box::new(f) }),
        (text(), time(), option::of(time()), failure()).prop_map(|(profile, since, retry_at, last)| {
            Error::UpstreamUnavailable { profile, since, retry_at, last: Box::new(last) }
        }),
        (text(), duration(), duration()).prop_map(|(profile, requested, lifetime)| Error::MinValidUnsatisfiable {
            profile,
            requested,
            lifetime
        }),
        (text(), text()).prop_map(|(profile, message)| Error::NotSupported { profile, message }),
        (text(), text()).prop_map(|(profile, message)| Error::Login { profile, message }),
        text().prop_map(|message| Error::InvalidConfig { message }),
        text().prop_map(|message| Error::BadRequest { message }),
        text().prop_map(|message| Error::Timeout { message }),
        Just(Error::ShuttingDown),
        text().prop_map(|message| Error::Internal { message }),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        (text(), option::of(duration())).prop_map(|(profile, min_valid)| Request::Token { profile, min_valid }),
        (text(), option::of(fingerprint())).prop_map(|(profile, rejected)| Request::Invalidate { profile, rejected }),
        text().prop_map(|profile| Request::Refresh { profile }),
        option::of(text()).prop_map(|profile| Request::Status { profile }),
        Just(Request::List),
        Just(Request::Reload),
        Just(Request::Shutdown),
        text().prop_map(|profile| Request::Login { profile }),
        (text(), text()).prop_map(|(profile, url)| Request::LoginRedirect { profile, url: Secret::new(url) }),
        text().prop_map(|profile| Request::Logout { profile }),
        text().prop_map(|profile| Request::Info { profile }),
        option::of(text()).prop_map(|profile| Request::Watch { profile }),
    ]
}

fn outcome() -> impl Strategy<Value = RevocationOutcome> {
    prop_oneof![
        Just(RevocationOutcome::Revoked),
        Just(RevocationOutcome::NoToken),
        Just(RevocationOutcome::NotConfigured),
        text().prop_map(RevocationOutcome::Failed),
    ]
}

fn pong() -> impl Strategy<Value = Pong> {
    (text(), any::<u32>(), time(), any::<u32>()).prop_map(|(daemon_version, pid, started_at, profiles)| Pong {
        daemon_version,
        pid,
        started_at,
        profiles,
    })
}

fn summary() -> impl Strategy<Value = ProfileSummary> {
    (text(), grant(), state()).prop_map(|(name, grant, state)| ProfileSummary { name, grant, state })
}

fn reload_summary() -> impl Strategy<Value = ReloadSummary> {
    (vec(text(), 0..4), vec(text(), 0..4), vec(text(), 0..4), vec(text(), 0..4))
        .prop_map(|(added, changed, removed, unchanged)| ReloadSummary { added, changed, removed, unchanged })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        pong().prop_map(Response::Pong),
        token().prop_map(Response::Token),
        vec(status(), 0..4).prop_map(Response::Status),
        vec(summary(), 0..4).prop_map(Response::List),
        reload_summary().prop_map(Response::Reloaded),
        Just(Response::ShuttingDown),
        (text(), text(), time()).prop_map(|(profile, url, expires_at)| Response::LoginUrl { profile, url, expires_at }),
        text().prop_map(|profile| Response::LoginDone { profile }),
        (text(), text(), text(), option::of(text()), time()).prop_map(
            |(profile, user_code, verification_uri, verification_uri_complete, expires_at)| Response::LoginCode {
                profile,
                user_code,
                verification_uri,
                verification_uri_complete,
                expires_at
            }
        ),
        (text(), outcome(), outcome()).prop_map(|(profile, refresh_token, access_token)| {
            Response::LoggedOut(RevocationReport { profile, refresh_token, access_token })
        }),
        (text(), any::<u16>(), text()).prop_map(|(profile, status, body)| Response::Info { profile, status, body }),
        token().prop_map(|t| Response::Event(Event::Token(t))),
        status().prop_map(|s| Response::Event(Event::Status(s))),
        text().prop_map(|profile| Response::Event(Event::Removed { profile })),
        (text(), time())
            .prop_map(|(profile, expires_at)| Response::Event(Event::LoginExpiring { profile, expires_at })),
        error().prop_map(Response::Error),
    ]
}

fn round_trip<T>(message: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut frame = Vec::new();
    codec::encode(message, &mut frame).unwrap();
    assert_eq!(codec::complete_frame(&frame), Ok(Some(frame.len())));
    codec::decode(&frame[HEADER_LEN..]).unwrap()
}

proptest! {
    #[test]
    fn every_request_survives_a_round_trip(request in request()) {
        prop_assert_eq!(round_trip(&request), request);
    }

    #[test]
    fn every_response_survives_a_round_trip(response in response()) {
        prop_assert_eq!(round_trip(&response), response);
    }

    #[test]
    fn handshakes_survive_a_round_trip(version in any::<u32>(), client in text(), message in text()) {
        let hello = Hello { version, client, ..Hello::new() };
        prop_assert_eq!(round_trip(&hello), hello);
        let reply = HelloReply { message, ..HelloReply::accept() };
        prop_assert_eq!(round_trip(&reply), reply);
    }

    #[test]
    fn every_proper_prefix_of_a_frame_is_incomplete(request in request(), cut in any::<prop::sample::Index>()) {
        let mut frame = Vec::new();
        codec::encode(&request, &mut frame).unwrap();
        let cut = cut.index(frame.len());
        prop_assert_eq!(codec::complete_frame(&frame[..cut]), Ok(None));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_claim_more_than_the_limit(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode::<Request>(&bytes);
        let _ = codec::decode::<Response>(&bytes);
        let _ = codec::decode::<Hello>(&bytes);
        if let Ok(Some(len)) = codec::complete_frame(&bytes) {
            prop_assert!(len <= HEADER_LEN + MAX_FRAME_LEN);
        }
    }
}
