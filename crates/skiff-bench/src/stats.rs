//! Latency summaries and the markdown tables every benchmark prints.
//!
//! Throughput is operations divided by the wall time of the whole phase, not the
//! inverse of the mean latency, so that concurrency shows in it. Percentiles use
//! the nearest-rank method: p99 of 100 samples is the 99th smallest, a value that
//! was actually observed.

use std::fmt;
use std::time::Duration;

/// The outcome of one measured phase.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Operations completed.
    pub ops: usize,
    /// Wall time of the whole phase.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Slowest operation.
    pub max: Duration,
}

impl Summary {
    /// Summarise `latencies` (in any order) of a phase that took `elapsed`.
    /// `None` when no operation completed.
    pub fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Option<Summary> {
        latencies.sort_unstable();
        Some(Summary {
            ops: latencies.len(),
            elapsed,
            p50: percentile(&latencies, 50.0)?,
            p99: percentile(&latencies, 99.0)?,
            max: *latencies.last()?,
        })
    }

    /// Operations per second over the phase's wall time.
    pub fn per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.ops as f64 / seconds
        } else {
            0.0
        }
    }
}

/// The nearest-rank `p`-th percentile (0 < p ≤ 100) of ascending `sorted`
/// samples; `None` when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Milliseconds with two decimals, the unit every table uses for latency.
pub fn ms(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

/// A rate with no decimals, or one decimal below 100.
pub fn rate(per_second: f64) -> String {
    if per_second < 100.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// Compare a measured `value` with a `ceiling` it should not exceed: "met" or
/// "MISSED" with the margin, always with the ratio so that a reader sees how
/// close it was.
pub fn against_ceiling(value: f64, ceiling: f64, unit: &str) -> String {
    let ratio = value / ceiling;
    if value <= ceiling {
        format!("met ({value:.1} {unit} ≤ {ceiling:.0} {unit}, {ratio:.2}× target)")
    } else {
        format!(
            "MISSED by {:.1} {unit} ({value:.1} {unit} > {ceiling:.0} {unit}, {ratio:.2}× target)",
            value - ceiling
        )
    }
}

/// A markdown table with padded columns, ready to paste into the docs.
#[derive(Debug, Clone)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(header: I) -> Table
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Table {
            header: header.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row; missing cells render empty, extra cells are kept.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        let cell =
            |row: &[String], i: usize| row.get(i).map_or("", |s| s.as_str()).replace('|', "\\|");
        let mut widths = vec![3; columns];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, width) in widths.iter_mut().enumerate() {
                *width = (*width).max(cell(row, i).chars().count());
            }
        }
        let line = |f: &mut fmt::Formatter<'_>, row: &[String]| -> fmt::Result {
            write!(f, "|")?;
            for (i, width) in widths.iter().enumerate() {
                let text = cell(row, i);
                let pad = width - text.chars().count();
                write!(f, " {text}{} |", " ".repeat(pad))?;
            }
            writeln!(f)
        };
        line(f, &self.header)?;
        write!(f, "|")?;
        for width in &widths {
            write!(f, "{}|", "-".repeat(width + 2))?;
        }
        writeln!(f)?;
        for row in &self.rows {
            line(f, row)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|&v| Duration::from_millis(v)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let sorted = millis(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&sorted, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&sorted, 0.1), Some(Duration::from_millis(1)));
        // With few samples, p99 is the largest rather than an interpolation.
        let few = millis(&[3, 7, 9]);
        assert_eq!(percentile(&few, 99.0), Some(Duration::from_millis(9)));
        assert_eq!(percentile(&few, 50.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let summary = Summary::new(millis(&[40, 10, 30, 20]), Duration::from_secs(2)).unwrap();
        assert_eq!(summary.ops, 4);
        assert_eq!(summary.p50, Duration::from_millis(20));
        assert_eq!(summary.p99, Duration::from_millis(40));
        assert_eq!(summary.max, Duration::from_millis(40));
        assert!((summary.per_second() - 2.0).abs() < 1e-9);
        assert_eq!(Summary::new(Vec::new(), Duration::from_secs(1)), None);
    }

    #[test]
    fn formats() {
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
        assert_eq!(rate(12.345), "12.3");
        assert_eq!(rate(12345.6), "12346");
        assert_eq!(
            against_ceiling(20.0, 50.0, "ms"),
            "met (20.0 ms ≤ 50 ms, 0.40× target)"
        );
        assert_eq!(
            against_ceiling(60.0, 50.0, "ms"),
            "MISSED by 10.0 ms (60.0 ms > 50 ms, 1.20× target)"
        );
    }

    #[test]
    fn markdown_table() {
        let mut table = Table::new(["op", "p99 ms"]);
        table.row(["create", "1.50"]);
        table.row(["a|b", "2", "extra"]);
        let text = table.to_string();
        // The header gets an empty cell for the extra column; `|` is escaped.
        let expected = "\
| op     | p99 ms |       |
|--------|--------|-------|
| create | 1.50   |       |
| a\\|b   | 2      | extra |
";
        assert_eq!(text, expected);
    }
}
