//! Sets of completion indexes as ordered, disjoint intervals, and their text
//! form in `status.completedIndexes` / `status.failedIndexes`.
//!
//! An Indexed Job of 100 000 completions must not write 100 000 numbers into
//! its status, so upstream compresses: `"0-2,4,7,8"` holds 0, 1, 2, 4, 7 and
//! 8. A run of two is written as a list (`7,8`), longer runs as a range. The
//! parser is lenient like upstream's: a malformed interval is skipped, and
//! indexes at or above `completions` are dropped (completions of an Indexed
//! Job may shrink together with parallelism).

use std::fmt;

/// One run of consecutive indexes, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Interval {
    first: i32,
    last: i32,
}

/// A set of completion indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Indexes {
    /// Sorted, disjoint and never adjacent (adjacent runs are merged).
    intervals: Vec<Interval>,
}

impl Indexes {
    /// Parses the status form, keeping only indexes below `completions`.
    pub fn parse(text: &str, completions: i32) -> Self {
        let mut set = Self::default();
        if text.is_empty() {
            return set;
        }
        for part in text.split(',') {
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (first.parse::<i32>(), last.parse::<i32>()),
                None => (part.parse::<i32>(), part.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else {
                continue;
            };
            if first < 0 || first > last || first >= completions {
                continue;
            }
            set.push(Interval {
                first,
                last: last.min(completions - 1),
            });
        }
        set
    }

    /// The union of `self` and `indexes` (in any order, duplicates allowed).
    pub fn with(&self, indexes: impl IntoIterator<Item = i32>) -> Self {
        let mut added: Vec<i32> = indexes.into_iter().filter(|i| *i >= 0).collect();
        added.sort_unstable();
        added.dedup();
        let added = added.into_iter().map(|i| Interval { first: i, last: i });
        self.merge_intervals(added)
    }

    /// The union of two sets.
    pub fn union(&self, other: &Self) -> Self {
        self.merge_intervals(other.intervals.iter().copied())
    }

    fn merge_intervals(&self, other: impl Iterator<Item = Interval>) -> Self {
        let mut all: Vec<Interval> = self.intervals.iter().copied().chain(other).collect();
        all.sort_by_key(|i| i.first);
        let mut merged = Self::default();
        for interval in all {
            merged.push(interval);
        }
        merged
    }

    /// Appends an interval that starts at or after the last one's start.
    fn push(&mut self, interval: Interval) {
        match self.intervals.last_mut() {
            Some(last) if interval.first <= last.last.saturating_add(1) => {
                last.last = last.last.max(interval.last);
            }
            _ => self.intervals.push(interval),
        }
    }

    /// How many indexes the set holds.
    pub fn total(&self) -> i32 {
        self.intervals.iter().map(|i| i.last - i.first + 1).sum()
    }

    /// True if the set holds no index.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// How many indexes the two sets have in common.
    pub fn common(&self, other: &Self) -> i32 {
        let (mut mine, mut theirs) = (
            self.intervals.iter().peekable(),
            other.intervals.iter().peekable(),
        );
        let mut count = 0;
        while let (Some(a), Some(b)) = (mine.peek(), theirs.peek()) {
            let overlap = a.last.min(b.last) - a.first.max(b.first) + 1;
            count += overlap.max(0);
            // Step past whichever run ends first (both when they end together).
            let (a_last, b_last) = (a.last, b.last);
            if a_last <= b_last {
                mine.next();
            }
            if b_last <= a_last {
                theirs.next();
            }
        }
        count
    }

    /// True if `index` is in the set.
    pub fn contains(&self, index: i32) -> bool {
        let at = self.intervals.partition_point(|i| i.last < index);
        self.intervals.get(at).is_some_and(|i| i.first <= index)
    }

    /// The first `count` indexes below `completions` that are not in the set.
    pub fn first_missing(&self, count: usize, completions: i32) -> Vec<i32> {
        let mut missing = Vec::with_capacity(count);
        let mut candidate = 0;
        for interval in &self.intervals {
            while candidate < interval.first && candidate < completions && missing.len() < count {
                missing.push(candidate);
                candidate += 1;
            }
            candidate = candidate.max(interval.last + 1);
        }
        while candidate < completions && missing.len() < count {
            missing.push(candidate);
            candidate += 1;
        }
        missing
    }
}

impl fmt::Display for Indexes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, interval) in self.intervals.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", interval.first)?;
            if interval.last == interval.first + 1 {
                write!(f, ",{}", interval.last)?;
            } else if interval.last > interval.first {
                write!(f, "-{}", interval.last)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_three_or_more_are_ranges_and_pairs_are_lists() {
        let set = Indexes::default().with([4, 0, 2, 1, 7, 8, 2]);
        assert_eq!(set.to_string(), "0-2,4,7,8");
        assert_eq!(set.total(), 6);
        assert!(set.contains(1) && set.contains(8) && !set.contains(3) && !set.contains(9));
    }

    #[test]
    fn parsing_merges_adjacent_runs_drops_garbage_and_clamps_to_completions() {
        let set = Indexes::parse("0-2,3,x,5-9,12", 8);
        assert_eq!(set.to_string(), "0-3,5-7");
        assert_eq!(set.total(), 7);
        assert_eq!(Indexes::parse("", 5), Indexes::default());
        assert_eq!(Indexes::parse("3-1,-1", 5).total(), 0);
    }

    #[test]
    fn adding_indexes_fills_gaps_between_runs() {
        let set = Indexes::parse("0-2,4-6", 10).with([3]);
        assert_eq!(set.to_string(), "0-6");
        assert_eq!(
            Indexes::parse("1", 10)
                .union(&Indexes::parse("0,2", 10))
                .to_string(),
            "0-2"
        );
    }

    #[test]
    fn common_counts_the_overlap_of_runs() {
        let a = Indexes::parse("0-4,8,10-12", 20);
        let b = Indexes::parse("3-9,11", 20);
        // 3, 4, 8 and 11.
        assert_eq!(a.common(&b), 4);
        assert_eq!(b.common(&a), 4);
        assert_eq!(a.common(&a), a.total());
        assert_eq!(a.common(&Indexes::default()), 0);
        assert!(Indexes::default().is_empty() && !a.is_empty());
    }

    #[test]
    fn first_missing_skips_taken_indexes_and_stops_at_completions() {
        let taken = Indexes::default().with([0, 1, 3, 6]);
        assert_eq!(taken.first_missing(3, 10), [2, 4, 5]);
        assert_eq!(taken.first_missing(10, 6), [2, 4, 5]);
        assert_eq!(Indexes::default().first_missing(2, 5), [0, 1]);
        assert!(taken.first_missing(0, 10).is_empty());
    }
}
