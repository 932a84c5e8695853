//! The retry policy: what an attempt came to, and whether the event is tried again (when) or
//! given up on (a dead letter).

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::DeliveryConfig;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The sink took the event (2xx; a JetStream ack).
    Delivered,
    /// Worth trying again: 5xx, 408, 429, a network error, a timeout.
    Failed {
        /// What happened, for `last_error` and the log; never a secret.
        error: String,
        /// The application's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// The application refused the event for good (4xx other than 408 and 429).
    Rejected {
        /// What happened.
        error: String,
    },
}

/// What an HTTP status means for the event.
#[must_use]
pub fn classify(status: StatusCode, retry_after: Option<Duration>) -> Attempt {
    if status.is_success() {
        return Attempt::Delivered;
    }
    let error = format!("the application answered HTTP {status}");
    let retried = status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS;
    if status.is_client_error() && !retried {
        Attempt::Rejected { error }
    } else {
        Attempt::Failed { error, retry_after }
    }
}

/// When to try again, and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Attempts at most (`delivery.max_attempts`).
    pub max_attempts: u32,
    /// Age at which an undelivered event is given up (`delivery.max_age`), from its receipt.
    pub max_age: Duration,
    /// Backoff after the first failure (`delivery.backoff_initial`).
    pub backoff_initial: Duration,
    /// Longest backoff (`delivery.backoff_max`).
    pub backoff_max: Duration,
}

/// What follows a failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Try again at this unix ms.
    RetryAt(i64),
    /// Give up: the event becomes a dead letter, for this reason.
    Dead(String),
}

impl Policy {
    /// From the config.
    #[must_use]
    pub fn from_config(config: &DeliveryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            max_age: config.max_age,
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
        }
    }

    /// The backoff after `failures` failed attempts (1 = the first), before jitter:
    /// `backoff_initial * 2^(failures - 1)`, at most `backoff_max`.
    #[must_use]
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.backoff_initial
            .saturating_mul(1_u32 << doublings.min(31))
            .min(self.backoff_max)
    }

    /// Decides what follows a failed attempt. `attempts` counts it; `jitter` is uniform in
    /// [0, 1) (a parameter so tests are exact). The wait is "equal jitter": half the backoff plus
    /// a random part of the other half, so retries of a burst spread out but never come early. A
    /// `Retry-After` is honoured up to `backoff_max`. The last retry is placed at the event's
    /// `max_age` deadline rather than beyond it.
    #[must_use]
    pub fn after_failure(
        &self,
        attempts: u32,
        received_at_ms: i64,
        now_ms: i64,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Next {
        if attempts >= self.max_attempts {
            return Next::Dead(format!(
                "gave up after {attempts} attempts (delivery.max_attempts)"
            ));
        }
        let deadline_ms = received_at_ms.saturating_add(duration_ms(self.max_age));
        if now_ms >= deadline_ms {
            return Next::Dead(format!(
                "gave up after {attempts} attempts: older than delivery.max_age ({})",
                humantime::format_duration(self.max_age)
            ));
        }
        let backoff = self.backoff(attempts);
        let half = backoff / 2;
        let wait = half + half.mul_f64(jitter.clamp(0.0, 1.0));
        let wait = match retry_after {
            Some(asked) => wait.max(asked.min(self.backoff_max)),
            None => wait,
        };
        Next::RetryAt(now_ms.saturating_add(duration_ms(wait)).min(deadline_ms))
    }
}

pub(super) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max_attempts: 5,
        max_age: Duration::from_secs(3600),
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };

    #[test]
    fn statuses_are_classified_as_final_or_retried() {
        assert_eq!(classify(StatusCode::OK, None), Attempt::Delivered);
        assert_eq!(classify(StatusCode::NO_CONTENT, None), Attempt::Delivered);
        for final_status in [400, 401, 403, 404, 409, 410, 422] {
            let status = StatusCode::from_u16(final_status).expect("valid");
            assert!(
                matches!(classify(status, None), Attempt::Rejected { .. }),
                "{status} must be final"
            );
        }
        for retried in [408, 429, 500, 502, 503, 504, 301, 302] {
            let status = StatusCode::from_u16(retried).expect("valid");
            assert!(
                matches!(classify(status, None), Attempt::Failed { .. }),
                "{status} must be retried"
            );
        }
        let asked = Some(Duration::from_secs(7));
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, asked),
            Attempt::Failed {
                error: "the application answered HTTP 429 Too Many Requests".into(),
                retry_after: asked
            }
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let secs: Vec<u64> = (1..=9).map(|n| POLICY.backoff(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow however many failures.
        assert_eq!(POLICY.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let now = 1_000_000;
        for (failures, jitter, expect_ms) in [(1, 0.0, 500), (1, 0.999_999, 999), (3, 0.5, 3000)] {
            assert_eq!(
                POLICY.after_failure(failures, now, now, None, jitter),
                Next::RetryAt(now + expect_ms),
                "failures {failures} jitter {jitter}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let now = 5_000_000;
        assert_eq!(
            POLICY.after_failure(1, now, now, Some(Duration::from_secs(30)), 0.0),
            Next::RetryAt(now + 30_000)
        );
        assert_eq!(
            POLICY.after_failure(1, now, now, Some(Duration::from_secs(600)), 0.0),
            Next::RetryAt(now + 60_000)
        );
    }

    #[test]
    fn gives_up_at_max_attempts_and_max_age_but_tries_once_at_the_deadline() {
        let received = 10_000_000;
        assert!(matches!(
            POLICY.after_failure(5, received, received + 1, None, 0.0),
            Next::Dead(why) if why.contains("max_attempts")
        ));
        let deadline = received + 3_600_000;
        assert!(matches!(
            POLICY.after_failure(2, received, deadline, None, 0.0),
            Next::Dead(why) if why.contains("max_age")
        ));
        // 10 s before the deadline with a 60 s backoff: the last retry is at the deadline.
        assert_eq!(
            POLICY.after_failure(
                4,
                received,
                deadline - 10_000,
                Some(Duration::from_secs(60)),
                0.0
            ),
            Next::RetryAt(deadline)
        );
    }
}
