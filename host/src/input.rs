//! The short text forms a person types on the command line and into page forms alike, read
//! once here: labels as `k=v,k=v`, a lifetime as `30m`, `1h`, `2d`. Pure: no I/O.

use std::time::Duration;

/// Why typed text was not understood. Messages name the text, not the field: the CLI puts
/// `--labels:` in front, a page `labels:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A label without `=`.
    #[error("{0:?} is not key=value")]
    NotKeyValue(String),
    /// Not a length of time weft can read (or one in months or years, whose length varies).
    #[error("{text:?} is not a duration like 30m, 1h or 2d: {why}")]
    NotDuration { text: String, why: String },
    /// Zero or negative.
    #[error("{0:?} must be positive")]
    NotPositive(String),
}

/// Labels from `k=v,k=v`: empty pairs are skipped, spaces around keys and values trimmed. The
/// keys and values themselves are checked where labels are stored.
pub fn parse_labels(text: &str) -> Result<Vec<(String, String)>, InputError> {
    text.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
            None => Err(InputError::NotKeyValue(pair.to_string())),
        })
        .collect()
}

/// A positive length of time: `30m`, `1h`, `2d`, `1w`, `1h 30m`, or ISO 8601 (`PT1H`). A day
/// counts as 24 hours; months and years are refused, having no fixed length.
pub fn parse_lifetime(text: &str) -> Result<Duration, InputError> {
    let text = text.trim();
    let not = |why: String| InputError::NotDuration {
        text: text.to_string(),
        why,
    };
    let span: jiff::Span = text.parse().map_err(|e: jiff::Error| not(e.to_string()))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| not(e.to_string()))?;
    Duration::try_from(duration)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| InputError::NotPositive(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_pairs_separated_by_commas() {
        assert_eq!(
            parse_labels(" region = eu , tier=edge,,").unwrap(),
            vec![
                ("region".to_string(), "eu".to_string()),
                ("tier".to_string(), "edge".to_string())
            ]
        );
        assert_eq!(parse_labels("").unwrap(), vec![]);
        assert_eq!(parse_labels("a=").unwrap(), vec![("a".into(), "".into())]);
        assert_eq!(
            parse_labels("a=1,oops").unwrap_err(),
            InputError::NotKeyValue("oops".into())
        );
    }

    #[test]
    fn lifetimes_read_minutes_hours_days_and_weeks() {
        let secs = |t: &str| parse_lifetime(t).map(|d| d.as_secs());
        assert_eq!(secs("30m"), Ok(1800));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs(" 2d "), Ok(2 * 86_400));
        assert_eq!(secs("1w"), Ok(7 * 86_400));
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("PT1H"), Ok(3600));
        assert_eq!(secs("1s"), Ok(1));
    }

    #[test]
    fn lifetimes_that_are_not_positive_or_not_fixed_are_refused() {
        assert_eq!(
            parse_lifetime("0s"),
            Err(InputError::NotPositive("0s".into()))
        );
        assert_eq!(
            parse_lifetime("-1h"),
            Err(InputError::NotPositive("-1h".into()))
        );
        for bad in ["", "soon", "1 month", "1y", "1h30"] {
            assert!(
                matches!(parse_lifetime(bad), Err(InputError::NotDuration { .. })),
                "{bad:?}"
            );
        }
    }
}
