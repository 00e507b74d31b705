//! The owner's hours of availability (`--hours 22:00-07:00`): a daily window of local time in
//! which this worker takes jobs. A window whose end is before its start wraps midnight.
//!
//! Everything here is pure on seconds since local midnight, except [`local_secs_of_day`].

use std::{fmt, str::FromStr};

pub const DAY_SECS: u32 = 24 * 3600;

/// A daily window `[start, end)` of local time, in minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    start_min: u32,
    end_min: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("expected HH:MM-HH:MM (e.g. 22:00-07:00), got {0:?}")]
    Shape(String),
    #[error("{0:?} is not a time of day HH:MM (00:00 to 24:00)")]
    Time(String),
    #[error("the window {0} is empty; leave --hours out to take jobs at any time")]
    Empty(String),
}

impl Hours {
    pub fn new(start_min: u32, end_min: u32) -> Result<Self, HoursError> {
        let hours = Hours {
            start_min: start_min.min(24 * 60),
            end_min: end_min.min(24 * 60),
        };
        if hours.start_min % (24 * 60) == hours.end_min % (24 * 60) {
            return Err(HoursError::Empty(hours.to_string()));
        }
        Ok(hours)
    }

    fn start_secs(&self) -> u32 {
        (self.start_min * 60) % DAY_SECS
    }

    fn end_secs(&self) -> u32 {
        (self.end_min * 60) % DAY_SECS
    }

    /// Whether `t` (seconds since local midnight) is inside the window.
    pub fn contains(&self, t: u32) -> bool {
        let (start, end, t) = (self.start_secs(), self.end_secs(), t % DAY_SECS);
        if start < end {
            start <= t && t < end
        } else {
            t >= start || t < end
        }
    }

    /// Seconds from `t` to the window's end when `t` is inside it.
    pub fn secs_left(&self, t: u32) -> Option<u32> {
        let t = t % DAY_SECS;
        self.contains(t)
            .then(|| (self.end_secs() + DAY_SECS - t) % DAY_SECS)
            .map(|left| if left == 0 { DAY_SECS } else { left })
    }
}

impl fmt::Display for Hours {
    /// `22:00–07:00` (an en dash, as a person writes a range).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}–{}", hm(self.start_min), hm(self.end_min))
    }
}

impl FromStr for Hours {
    type Err = HoursError;

    /// `HH:MM-HH:MM` (a hyphen or an en dash between), e.g. `22:00-07:00`, `9:30-17:00`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once('-')
            .or_else(|| s.split_once('–'))
            .ok_or_else(|| HoursError::Shape(s.into()))?;
        Hours::new(minutes(a.trim())?, minutes(b.trim())?)
    }
}

/// `HH:MM` → minutes since midnight (`24:00` is the end of the day).
fn minutes(s: &str) -> Result<u32, HoursError> {
    let bad = || HoursError::Time(s.into());
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let digits = |x: &str| !x.is_empty() && x.len() <= 2 && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || m.len() != 2 || !digits(m) {
        return Err(bad());
    }
    let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Seconds since local midnight now, in this process's time zone (`TZ`, else the system's).
pub fn local_secs_of_day() -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = libc::time_t::try_from(now).unwrap_or(0);
    // SAFETY: localtime_r writes only into `tm`, which outlives the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return (now % u64::from(DAY_SECS)) as u32; // UTC, rather than nothing
    }
    (tm.tm_hour.clamp(0, 23) as u32) * 3600 + (tm.tm_min.clamp(0, 59) as u32) * 60 + tm.tm_sec.clamp(0, 60) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u32, m: u32) -> u32 {
        h * 3600 + m * 60
    }

    #[test]
    fn a_window_within_the_day() {
        let h: Hours = "09:30-17:00".parse().unwrap();
        assert!(!h.contains(at(9, 29)));
        assert!(h.contains(at(9, 30)));
        assert!(h.contains(at(16, 59)));
        assert!(!h.contains(at(17, 0)));
        assert_eq!(h.secs_left(at(16, 0)), Some(3600));
        assert_eq!(h.secs_left(at(8, 0)), None);
        assert_eq!(h.to_string(), "09:30–17:00");
    }

    #[test]
    fn a_window_that_wraps_midnight() {
        let h: Hours = "22:00-07:00".parse().unwrap();
        assert!(h.contains(at(22, 0)));
        assert!(h.contains(at(23, 59)));
        assert!(h.contains(at(0, 0)));
        assert!(h.contains(at(6, 59)));
        assert!(!h.contains(at(7, 0)));
        assert!(!h.contains(at(12, 0)));
        assert!(!h.contains(at(21, 59)));
        // From 23:00, nine hours to 07:00; from 06:00, one.
        assert_eq!(h.secs_left(at(23, 0)), Some(8 * 3600));
        assert_eq!(h.secs_left(at(6, 0)), Some(3600));
        assert_eq!(h.secs_left(at(12, 0)), None);
        assert_eq!(h.to_string(), "22:00–07:00");
    }

    #[test]
    fn the_end_of_the_day_and_dashes() {
        let h: Hours = "18:00–24:00".parse().unwrap();
        assert!(h.contains(at(23, 59)) && !h.contains(at(0, 0)) && !h.contains(at(17, 59)));
        assert_eq!(h.secs_left(at(23, 0)), Some(3600));
        let all_but_midnight: Hours = "0:00 - 23:59".parse().unwrap();
        assert!(all_but_midnight.contains(at(12, 0)));
    }

    #[test]
    fn bad_windows_are_refused_with_their_reason() {
        for (s, want) in [
            ("22:00", HoursError::Shape("22:00".into())),
            ("22-07", HoursError::Time("22".into())),
            ("25:00-07:00", HoursError::Time("25:00".into())),
            ("22:60-07:00", HoursError::Time("22:60".into())),
            ("22:00-7:5", HoursError::Time("7:5".into())),
            ("24:30-07:00", HoursError::Time("24:30".into())),
            ("-1:00-07:00", HoursError::Time("".into())),
        ] {
            assert_eq!(s.parse::<Hours>().err(), Some(want), "{s}");
        }
        assert!(matches!("08:00-08:00".parse::<Hours>(), Err(HoursError::Empty(_))));
        assert!(matches!("00:00-24:00".parse::<Hours>(), Err(HoursError::Empty(_))));
    }

    #[test]
    fn local_time_is_a_time_of_day() {
        assert!(local_secs_of_day() <= DAY_SECS);
    }
}
