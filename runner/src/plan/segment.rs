//! A shard of a run: `--segment i/N` runs a deterministic 1/N share of the job's load, so that N load generators
//! together send what one would have. Virtual user u runs on shard u mod N, the open model's arrival k on shard
//! k mod N (every shard draws the same seeded schedule and keeps its own arrivals), and local request k of a shard
//! is the single run's request k·N + i: the shards' requests are disjoint and together the single run's.

use std::fmt;

/// The most shards one job may be split into.
pub const MAX_SEGMENTS: u32 = 1_000;

/// Shard `index` (from 0) of `count`; `count` ≥ 1 and `index` < `count`, checked when it is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Segment {
    index: u32,
    count: u32,
}

/// Why a segment cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("`{text}` is not a segment: write it as INDEX/COUNT, e.g. `0/4` for the first of four shards")]
    Syntax { text: String },
    #[error("segment {index}/{count}: shards are numbered from 0, so the index must be below the count")]
    OutOfRange { index: u32, count: u32 },
    #[error("segment {index}/{count}: the count must be between 1 and {MAX_SEGMENTS}")]
    Count { index: u32, count: u32 },
    #[error(
        "PLATEAU_SEGMENTS={count} is set, but no shard index: neither JOB_COMPLETION_INDEX (a Kubernetes Indexed Job) \
         nor AWS_BATCH_JOB_ARRAY_INDEX (an AWS Batch array job) is; pass --segment INDEX/COUNT instead"
    )]
    NoIndex { count: String },
    #[error("{variable}={value} is not a whole number")]
    NotANumber { variable: &'static str, value: String },
}

/// The environment variables a Kubernetes Indexed Job and an AWS Batch array job set to each shard's index.
pub const INDEX_VARIABLES: [&str; 2] = ["JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX"];
/// The shard count, which neither of them sets: the manifests and the Batch recipe set it to the completions.
pub const COUNT_VARIABLE: &str = "PLATEAU_SEGMENTS";

impl Segment {
    pub fn new(index: u32, count: u32) -> Result<Self, SegmentError> {
        if count == 0 || count > MAX_SEGMENTS {
            return Err(SegmentError::Count { index, count });
        }
        if index >= count {
            return Err(SegmentError::OutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The shard an Indexed Job or array job gives this process through `lookup` (the environment), if any: only
    /// when `PLATEAU_SEGMENTS` says the job is sharded (an index alone may be an unrelated job's).
    pub fn from_environment(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, SegmentError> {
        let Some(count) = lookup(COUNT_VARIABLE) else { return Ok(None) };
        let Some((variable, index)) =
            INDEX_VARIABLES.iter().find_map(|variable| lookup(variable).map(|value| (*variable, value)))
        else {
            return Err(SegmentError::NoIndex { count });
        };
        let number = |variable: &'static str, value: &str| {
            value.trim().parse::<u32>().map_err(|_| SegmentError::NotANumber { variable, value: value.to_string() })
        };
        Self::new(number(variable, &index)?, number(COUNT_VARIABLE, &count)?).map(Some)
    }

    /// Virtual users this shard runs when the job asks for `users` in all: those numbered u ≡ index (mod count).
    pub fn users(self, users: u32) -> u32 {
        (users + self.count - 1 - self.index) / self.count
    }

    /// This shard's share of a load: its users, or its share of an offered rate. The whole run's load is kept as
    /// it is (a phase's users may be fractional mid-ramp).
    pub fn share(self, load: f64, users: bool) -> f64 {
        match (self.count, users) {
            (1, _) => load,
            (_, true) => f64::from(self.users(load as u32)),
            (count, false) => load / f64::from(count),
        }
    }

    /// Whether arrival `k` of the schedule (numbered from 0) is this shard's.
    pub fn keeps(self, arrival: u64) -> bool {
        arrival % u64::from(self.count) == u64::from(self.index)
    }

    /// The single run's number for this shard's local request `local`.
    pub fn sequence(self, local: u64) -> u64 {
        local * u64::from(self.count) + u64::from(self.index)
    }

    /// The whole run, as one process runs it.
    pub fn whole() -> Self {
        Self { index: 0, count: 1 }
    }
}

impl From<Segment> for String {
    fn from(segment: Segment) -> String {
        segment.to_string()
    }
}

impl TryFrom<String> for Segment {
    type Error = SegmentError;

    fn try_from(text: String) -> Result<Self, SegmentError> {
        text.parse()
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl std::str::FromStr for Segment {
    type Err = SegmentError;

    fn from_str(text: &str) -> Result<Self, SegmentError> {
        let syntax = || SegmentError::Syntax { text: text.to_string() };
        let (index, count) = text.trim().split_once('/').ok_or_else(syntax)?;
        let (index, count) = (index.parse().map_err(|_| syntax())?, count.parse().map_err(|_| syntax())?);
        Self::new(index, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_users_arrivals_and_sequence_numbers_without_overlap_or_gap() {
        for count in [1, 2, 3, 4, 7] {
            let shards: Vec<Segment> = (0..count).map(|index| Segment::new(index, count).unwrap()).collect();
            for users in 0..40 {
                assert_eq!(
                    shards.iter().map(|shard| shard.users(users)).sum::<u32>(),
                    users,
                    "{users} users in {count}"
                );
                let shares: f64 = shards.iter().map(|shard| shard.share(f64::from(users), false)).sum();
                assert!((shares - f64::from(users)).abs() < 1e-9);
            }
            for arrival in 0..100 {
                assert_eq!(shards.iter().filter(|shard| shard.keeps(arrival)).count(), 1);
            }
            // Each shard's first k requests: together, the single run's first k·count, each once.
            let mut all: Vec<u64> =
                shards.iter().flat_map(|shard| (0..25).map(|local| shard.sequence(local))).collect();
            all.sort_unstable();
            assert_eq!(all, (0..25 * u64::from(count)).collect::<Vec<_>>());
        }
    }

    #[test]
    fn segments_are_read_from_the_command_line_and_the_environment() {
        assert_eq!("2/4".parse::<Segment>(), Segment::new(2, 4));
        assert_eq!("4/4".parse::<Segment>(), Err(SegmentError::OutOfRange { index: 4, count: 4 }));
        assert!(matches!("2-4".parse::<Segment>(), Err(SegmentError::Syntax { .. })));
        assert_eq!("0/0".parse::<Segment>(), Err(SegmentError::Count { index: 0, count: 0 }));
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(key, _)| *key == name).map(|(_, value)| value.to_string())
        };
        assert_eq!(Segment::from_environment(env(&[])), Ok(None));
        assert_eq!(
            Segment::from_environment(env(&[("JOB_COMPLETION_INDEX", "3"), ("PLATEAU_SEGMENTS", "8")])),
            Ok(Some(Segment::new(3, 8).unwrap()))
        );
        assert_eq!(
            Segment::from_environment(env(&[("AWS_BATCH_JOB_ARRAY_INDEX", "1"), ("PLATEAU_SEGMENTS", "2")])),
            Ok(Some(Segment::new(1, 2).unwrap()))
        );
        assert_eq!(Segment::from_environment(env(&[("JOB_COMPLETION_INDEX", "3")])), Ok(None), "another job's index");
        assert!(matches!(
            Segment::from_environment(env(&[("PLATEAU_SEGMENTS", "3")])),
            Err(SegmentError::NoIndex { .. })
        ));
    }
}
