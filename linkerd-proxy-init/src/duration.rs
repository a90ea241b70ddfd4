//! Durations as the tools' flags spell them: `<n>ms`, `<n>s`, `<n>m`, `<n>h`, `<n>d`, or a
//! bare `0`; also Go's compound form (`1m30s`), which the network validator's upstream accepts.

use std::time::Duration;

/// Parses `s`, or says why it is not a duration.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("an empty duration".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("{s:?} has no unit (ms, s, m, h or d)"))?;
        if digits == 0 {
            return Err(format!("{s:?} is not a duration"));
        }
        let (num, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let num: f64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
        let secs = match unit {
            "ms" => num / 1000.0,
            "s" => num,
            "m" => num * 60.0,
            "h" => num * 3600.0,
            "d" => num * 86400.0,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h or d)")),
        };
        total += Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        let d = |s| parse(s).unwrap();
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("10s"), Duration::from_secs(10));
        assert_eq!(d("2m"), Duration::from_secs(120));
        assert_eq!(d("1h"), Duration::from_secs(3600));
        assert_eq!(d("1d"), Duration::from_secs(86400));
        assert_eq!(d("1m30s"), Duration::from_secs(90));
        for bad in ["", "10", "s", "10x", "-1s", "1.2.3s"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
