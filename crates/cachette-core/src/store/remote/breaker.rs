//! The circuit breaker of one server: after [`THRESHOLD`] operations in a row found it unavailable
//! (refused, broken, or silent past the timeout), it **opens** and every operation fails at once
//! for a cooldown. Then one operation is let through as a **probe** while the others still fail at
//! once: if it succeeds the breaker closes, if not it opens again. The cooldown is 1 s, doubled
//! after each probe the server left unanswered up to 30 s (each such probe costs its caller the
//! whole timeout); a probe refused at once keeps it at 1 s, so a restarted server is used again
//! within a second of its return. Any answer of the server (a success, or an error the server
//! itself returned) counts as a success: only silence and broken connections open it.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Failures in a row that open the breaker.
pub(crate) const THRESHOLD: u32 = 5;
/// The first cooldown, and the longest one.
pub(crate) const FIRST_COOLDOWN: Duration = Duration::from_secs(1);
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(30);

/// Why an operation was not let through: the breaker is open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Open {
  /// Which opening this is (1 for the first of this server in the process; reopening after a
  /// failed probe is the same one): the fail-fast error names it and nothing else that changes,
  /// so a layer that warns once per distinct message warns once per opening.
  pub opening: u64,
  /// How long the breaker stays open before the next probe.
  pub cooldown: Duration,
  /// What the failure that opened it said.
  pub last: String,
}

/// What [`Breaker::admit`] let through: an ordinary operation, or the one probe of a half-open
/// breaker. Dropping a probe that never reported (its task was cancelled) lets the next one try.
#[must_use]
pub(crate) struct Permit<'a> {
  breaker: &'a Breaker,
  probe: bool,
}

impl Drop for Permit<'_> {
  fn drop(&mut self) {
    if self.probe {
      self.breaker.state.lock().probing = false;
    }
  }
}

impl Permit<'_> {
  /// The server answered: the breaker closes.
  pub(crate) fn succeeded(self) {
    let mut s = self.breaker.state.lock();
    s.failures = 0;
    s.open = None;
    s.cooldown = FIRST_COOLDOWN;
  }

  /// The server was unavailable (`reason`; `silent`: it left the operation unanswered until the
  /// timeout). True when this failure opened the breaker (or opened it again after a failed
  /// probe): the caller then drops its connections, so the probe makes a new one instead of
  /// waiting on a socket that may never answer.
  pub(crate) fn failed(self, reason: &str, silent: bool) -> bool {
    self.failed_at(reason, silent, Instant::now())
  }

  fn failed_at(self, reason: &str, silent: bool, now: Instant) -> bool {
    let mut s = self.breaker.state.lock();
    let s = &mut *s;
    if self.probe {
      s.cooldown = if silent {
        (s.cooldown * 2).min(MAX_COOLDOWN)
      } else {
        FIRST_COOLDOWN
      };
      if let Some((until, open)) = &mut s.open {
        *until = now + s.cooldown;
        open.cooldown = s.cooldown;
      }
      return true;
    }
    if s.open.is_some() {
      return false; // let through before the breaker opened; it is open already
    }
    s.failures += 1;
    if s.failures < THRESHOLD {
      return false;
    }
    s.cooldown = FIRST_COOLDOWN;
    s.openings += 1;
    s.open = Some((
      now + s.cooldown,
      Open {
        opening: s.openings,
        cooldown: s.cooldown,
        last: reason.to_owned(),
      },
    ));
    true
  }
}

#[derive(Debug)]
struct State {
  /// Unavailable answers in a row while closed.
  failures: u32,
  /// While open: until when, and what the fail-fast error says.
  open: Option<(Instant, Open)>,
  cooldown: Duration,
  /// A probe is in flight: the others still fail at once.
  probing: bool,
  openings: u64,
}

/// One server's breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
  state: Mutex<State>,
}

impl Default for Breaker {
  fn default() -> Self {
    Breaker {
      state: Mutex::new(State {
        failures: 0,
        open: None,
        cooldown: FIRST_COOLDOWN,
        probing: false,
        openings: 0,
      }),
    }
  }
}

impl Breaker {
  /// Lets an operation through, or says why not (the breaker is open).
  pub(crate) fn admit(&self) -> Result<Permit<'_>, Open> {
    self.admit_at(Instant::now())
  }

  fn admit_at(&self, now: Instant) -> Result<Permit<'_>, Open> {
    let mut s = self.state.lock();
    let Some((until, open)) = &s.open else {
      return Ok(Permit {
        breaker: self,
        probe: false,
      });
    };
    if now < *until || s.probing {
      return Err(open.clone());
    }
    s.probing = true;
    Ok(Permit {
      breaker: self,
      probe: true,
    })
  }

  /// How many times the breaker opened (for tests and figures).
  #[cfg(test)]
  pub(crate) fn openings(&self) -> u64 {
    self.state.lock().openings
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn fail(b: &Breaker, now: Instant) -> bool {
    b.admit_at(now).expect("admitted").failed_at("silent", true, now)
  }

  #[test]
  fn the_breaker_opens_after_five_failures_in_a_row_and_an_answer_resets_the_count() {
    let (b, t) = (Breaker::default(), Instant::now());
    for _ in 0..THRESHOLD - 1 {
      assert!(!fail(&b, t));
    }
    b.admit_at(t).expect("still closed").succeeded();
    for _ in 0..THRESHOLD - 1 {
      assert!(!fail(&b, t));
    }
    assert!(fail(&b, t), "the fifth failure in a row opens it");
    let open = b.admit_at(t).err().expect("open: fails at once");
    assert_eq!(
      (open.opening, open.cooldown, open.last.as_str()),
      (1, FIRST_COOLDOWN, "silent")
    );
  }

  #[test]
  fn an_open_breaker_lets_one_probe_through_after_its_cooldown_and_closes_when_it_succeeds() {
    let (b, t) = (Breaker::default(), Instant::now());
    for _ in 0..THRESHOLD {
      fail(&b, t);
    }
    assert!(b.admit_at(t + FIRST_COOLDOWN / 2).is_err());
    let probe = b.admit_at(t + FIRST_COOLDOWN).expect("the probe");
    assert!(
      b.admit_at(t + FIRST_COOLDOWN).is_err(),
      "others fail at once while the probe is out"
    );
    probe.succeeded();
    assert!(b.admit_at(t + FIRST_COOLDOWN).is_ok(), "closed");
  }

  #[test]
  fn a_probe_refused_at_once_opens_the_breaker_again_for_the_first_cooldown() {
    let (b, t) = (Breaker::default(), Instant::now());
    for _ in 0..THRESHOLD {
      fail(&b, t);
    }
    let t = t + FIRST_COOLDOWN;
    assert!(fail(&b, t), "unanswered");
    let t = t + 2 * FIRST_COOLDOWN;
    assert!(b.admit_at(t).expect("probe").failed_at("refused", false, t));
    assert_eq!(b.admit_at(t).err().expect("open").cooldown, FIRST_COOLDOWN);
  }

  #[test]
  fn each_unanswered_probe_doubles_the_cooldown_up_to_thirty_seconds() {
    let (b, mut t) = (Breaker::default(), Instant::now());
    for _ in 0..THRESHOLD {
      fail(&b, t);
    }
    let mut cooldowns = vec![];
    for _ in 0..8 {
      let open = b.admit_at(t).err().expect("open");
      cooldowns.push(open.cooldown.as_secs());
      t += open.cooldown;
      assert!(fail(&b, t), "a failed probe opens it again");
    }
    assert_eq!(cooldowns, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(b.openings(), 1, "failed probes reopen the same opening");
  }

  #[test]
  fn a_probe_dropped_without_an_answer_lets_the_next_operation_probe() {
    let (b, t) = (Breaker::default(), Instant::now());
    for _ in 0..THRESHOLD {
      fail(&b, t);
    }
    drop(b.admit_at(t + FIRST_COOLDOWN).expect("the probe"));
    assert!(
      b.admit_at(t + FIRST_COOLDOWN).is_ok(),
      "a cancelled probe blocks nobody"
    );
  }

  #[test]
  fn a_failure_of_an_operation_let_through_before_the_opening_does_not_extend_it() {
    let (b, t) = (Breaker::default(), Instant::now());
    let late = b.admit_at(t).expect("admitted");
    for _ in 0..THRESHOLD {
      fail(&b, t);
    }
    assert!(!late.failed_at("late", true, t + FIRST_COOLDOWN / 2));
    assert!(b.admit_at(t + FIRST_COOLDOWN).is_ok(), "probe on time");
  }
}
