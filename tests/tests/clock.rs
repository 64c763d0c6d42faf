//! The wall clock jumps (a laptop resumes from sleep, `date -s`, NTP stepping): a token past
//! its expiry by the wall clock is never served, and refresh timers are re-armed at once rather
//! than firing when the monotonic clock gets there.
//!
//! This test sets the machine's real clock (it needs root) and restores it afterwards, even if
//! it fails. It is alone in its test binary, and cargo runs test binaries one at a time, so no
//! other test sees the jump.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokend_e2e::{FakeProvider, Need, Tokend, eventually, require};

/// Moves the wall clock; puts it back (advanced by the real time that passed) when dropped.
struct ClockJump {
    wall: SystemTime,
    mono: Instant,
}

impl ClockJump {
    fn forward(by: Duration) -> ClockJump {
        let jump = ClockJump { wall: SystemTime::now(), mono: Instant::now() };
        set_clock(SystemTime::now() + by);
        jump
    }
}

impl Drop for ClockJump {
    fn drop(&mut self) {
        set_clock(self.wall + self.mono.elapsed());
    }
}

fn set_clock(to: SystemTime) {
    let since = to.duration_since(UNIX_EPOCH).unwrap();
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(since.as_secs()).expect("a time after 1970 that fits"),
        tv_nsec: libc::c_long::from(since.subsec_nanos()),
    };
    // SAFETY: clock_settime with a valid timespec.
    let rc = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    assert_eq!(rc, 0, "setting the clock needs root (CAP_SYS_TIME): {}", std::io::Error::last_os_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clock_jump_no_stale_token_is_served_and_timers_are_rearmed() {
    require!(Need::SetClock);
    let fake = FakeProvider::with_basic_client().await;
    fake.set_lifetime(Duration::from_secs(60));
    let tokend = Tokend::start(&fake.cc_profile("p", "")).await;
    let first = tokend.client().await.token("p").await.unwrap();
    assert_eq!(fake.token_requests(), 1);

    // As if the machine slept for 90 s: the token expired and its refresh (due half-way) is
    // overdue, but the monotonic clock the timers run on did not move.
    let jump = ClockJump::forward(Duration::from_secs(90));
    assert!(
        eventually(Duration::from_secs(5), || fake.token_requests() >= 2).await,
        "the refresh timer was re-armed from the wall clock and fired at once:\n{}",
        tokend.log()
    );
    let second = tokend.client().await.token("p").await.unwrap();
    assert_ne!(second.fingerprint, first.fingerprint, "the expired token is never served");
    assert!(second.expires_at > SystemTime::now());
    assert!(fake.accepts(second.access_token.expose()));
    assert!(tokend.log().contains("the wall clock jumped"), "{}", tokend.log());
    drop(jump);

    // Serving alone also judges expiry by the wall clock: jump past the new token's expiry and
    // ask at once, before any timer can act.
    let past_expiry = second.expires_at.duration_since(SystemTime::now()).unwrap() + Duration::from_secs(5);
    let _jump = ClockJump::forward(past_expiry);
    let third = tokend.client().await.token("p").await.unwrap();
    assert_ne!(third.fingerprint, second.fingerprint);
    assert!(third.expires_at > SystemTime::now());
}
