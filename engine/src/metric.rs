//! Similarity metrics.

use crate::error::Error;

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Metric {
    /// Cosine similarity; higher is closer. Zero vectors are refused.
    #[default]
    Cosine,
    /// Inner product; higher is closer.
    Dot,
    /// Squared Euclidean distance; lower is closer.
    L2,
}

impl Metric {
    /// The name used on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// True when a larger score means a closer vector.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Metric::L2)
    }

    /// Maps a score to a key where larger is always better (for one top-k implementation).
    #[inline]
    pub(crate) fn to_key(self, score: f32) -> f32 {
        if self.higher_is_better() {
            score
        } else {
            -score
        }
    }
}

impl std::str::FromStr for Metric {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "cosine" | "angular" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Ok(Metric::Dot),
            "l2" | "euclidean" => Ok(Metric::L2),
            other => Err(Error::invalid_argument(
                "metric",
                format!("unknown metric {other:?}: use cosine, dot or l2"),
            )),
        }
    }
}
