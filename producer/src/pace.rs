//! Pacing of file replays by packet time (`producer.speed`): each frame waits until its packet-time offset from
//! the first frame, divided by the speed factor, has passed on the wall clock. A frame outside the packet-time
//! skew of the capture (`producer.time`, the rule the pipeline applies) is never waited for and moves neither the
//! pacing origin nor the packet clock, so a far-future timestamp cannot stall a replay; when the clock
//! re-anchors (time really jumped), pacing restarts from that frame.

use std::time::{Duration, Instant, SystemTime};

use netanom_schemas::packet_time::{Admission, PacketClock, SkewConfig, elapsed_ns};

/// Longest single sleep, so `stop` is honoured promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// The wall clock a [`Pacer`] reads and sleeps on.
pub trait WallClock {
    /// Now.
    fn now(&self) -> Instant;
    /// Sleeps for `d`.
    fn sleep(&mut self, d: Duration);
}

/// The system's monotonic clock and `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Paces frames by their packet time. See the module documentation.
#[derive(Debug)]
pub struct Pacer<C: WallClock = SystemClock> {
    factor: f64,
    time: SkewConfig,
    clock: PacketClock,
    origin: Option<(i64, Instant)>,
    anchor: Option<PaceAnchor>,
    wall: C,
}

/// Where a paced replay is anchored: the packet time of the frame pacing started (or last restarted) from, and
/// the system time it was released. A later frame stamped `ts_ns` is released `(ts_ns - self.ts_ns) / speed`
/// after `self.released`, so the wall time of any packet of the replay follows from it (latency benchmarks
/// measure from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceAnchor {
    /// Packet time of the anchoring frame, ns since the Unix epoch.
    pub ts_ns: i64,
    /// System time at which the anchoring frame was released.
    pub released: SystemTime,
}

impl<C: WallClock> Pacer<C> {
    /// Paces at `factor` times real time (1 = real time) with the skew rule `time`, on `wall`.
    pub fn new(factor: f64, time: &SkewConfig, wall: C) -> Self {
        Self { factor, time: time.clone(), clock: PacketClock::default(), origin: None, anchor: None, wall }
    }

    /// The skew rule in force.
    pub fn set_time(&mut self, time: &SkewConfig) {
        self.time = time.clone();
    }

    /// The anchor pacing currently runs from; `None` before the first frame.
    pub fn anchor(&self) -> Option<PaceAnchor> {
        self.anchor
    }

    /// Waits until the frame stamped `ts_ns` is due. Returns false when `stop` became true while waiting.
    pub fn wait(&mut self, ts_ns: i64, stop: &dyn Fn() -> bool) -> bool {
        match self.clock.admit(&self.time, ts_ns, ts_ns) {
            Admission::Rejected(_) => return true,
            Admission::Resynced { .. } => self.origin = None,
            Admission::Accepted => {}
        }
        let (first, start) = *self.origin.get_or_insert_with(|| {
            self.anchor = Some(PaceAnchor { ts_ns, released: SystemTime::now() });
            (ts_ns, self.wall.now())
        });
        let offset_ns = (elapsed_ns(ts_ns, first).max(0) as f64 / self.factor) as u64;
        let Some(due) = start.checked_add(Duration::from_nanos(offset_ns)) else { return true };
        loop {
            let now = self.wall.now();
            if now >= due {
                return true;
            }
            if stop() {
                return false;
            }
            self.wall.sleep((due - now).min(MAX_SLEEP));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock that only moves when slept on, and records every sleep.
    struct FakeClock {
        now: Instant,
        sleeps: Vec<Duration>,
    }

    impl WallClock for FakeClock {
        fn now(&self) -> Instant {
            self.now
        }

        fn sleep(&mut self, d: Duration) {
            self.sleeps.push(d);
            self.now += d;
        }
    }

    const S: i64 = 1_000_000_000;
    const T: i64 = 1_700_000_000 * S;

    fn pacer() -> Pacer<FakeClock> {
        Pacer::new(1.0, &SkewConfig::default(), FakeClock { now: Instant::now(), sleeps: Vec::new() })
    }

    fn slept(p: &Pacer<FakeClock>) -> Duration {
        p.wall.sleeps.iter().sum()
    }

    #[test]
    fn realtime_never_sleeps_on_a_rejected_timestamp() {
        let mut p = pacer();
        let never = || false;
        assert!(p.wait(T, &never));
        assert!(p.wait(T + S, &never));
        assert_eq!(slept(&p), Duration::from_secs(1));
        // Ten years ahead, 1970, the ends of the range: no sleep call at all, the origin unchanged.
        for bogus in [T + 10 * 365 * 86_400 * S, S, 0, i64::MIN, i64::MAX] {
            let calls = p.wall.sleeps.len();
            assert!(p.wait(bogus, &never));
            assert_eq!(p.wall.sleeps.len(), calls, "slept on {bogus}");
            // A good frame in between: the replay goes on one second later, as the capture says.
            assert!(p.wait(T + 2 * S, &never));
            assert_eq!(slept(&p), Duration::from_secs(2));
        }
    }

    #[test]
    fn a_jump_confirmed_by_later_frames_restarts_pacing_and_stop_ends_a_wait() {
        let mut p = pacer();
        let never = || false;
        assert_eq!(p.anchor(), None);
        p.wait(T, &never);
        assert_eq!(p.anchor().map(|a| a.ts_ns), Some(T));
        let later = T + 86_400 * S;
        for k in 0..3 {
            assert!(p.wait(later + k * S, &never));
        }
        assert_eq!(slept(&p), Duration::ZERO, "the frame that re-anchors is due at once");
        // The third frame of the new time confirms the jump and re-anchors.
        assert_eq!(p.anchor().map(|a| a.ts_ns), Some(later + 2 * S), "the anchor follows the re-anchoring frame");
        assert!(p.wait(later + 3 * S, &never));
        assert_eq!(slept(&p), Duration::from_secs(1));
        assert!(!p.wait(later + 60 * S, &|| true), "stop is honoured while waiting");
        // A factor of 10 replays ten seconds of packet time in one.
        let mut fast = Pacer::new(10.0, &SkewConfig::default(), FakeClock { now: Instant::now(), sleeps: Vec::new() });
        fast.wait(T, &never);
        fast.wait(T + 10 * S, &never);
        assert_eq!(slept(&fast), Duration::from_secs(1));
    }
}
