//! A small log-linear latency histogram (microseconds), mergeable across tasks.

const SUB: u64 = 16;
const BUCKETS: usize = 64 * SUB as usize;

#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    pub max: u64,
    pub n: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            max: 0,
            n: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() as u64;
    let shift = exp - 4;
    let mantissa = (v >> shift) & (SUB - 1);
    ((exp - 3) * SUB + mantissa) as usize
}

fn lower_bound(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let exp = b / SUB + 3;
    let mantissa = b % SUB;
    (SUB + mantissa) << (exp - 4)
}

impl Hist {
    pub fn record(&mut self, us: u64) {
        self.counts[bucket(us).min(BUCKETS - 1)] += 1;
        self.max = self.max.max(us);
        self.n += 1;
    }

    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.max = self.max.max(other.max);
        self.n += other.n;
    }

    /// The value at quantile `q` (0..=1), to within 1/16 of itself.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let target = ((self.n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= target {
                return lower_bound(b).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Hist::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 5000.0).abs() / 5000.0 < 0.07, "{p50}");
        assert!((p99 - 9900.0).abs() / 9900.0 < 0.07, "{p99}");
        assert_eq!(h.max, 10_000);
    }
}
