//! Quantiles from cumulative histogram buckets, computed the way PromQL's `histogram_quantile`
//! does, so a direct scrape and a Prometheus server report the same latency for the same data.

/// One cumulative bucket: observations less than or equal to `le`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// The `q`-quantile (0..=1) of the observations counted in `buckets` (cumulative counts, in any
/// order; one of them must be the `+Inf` bucket).
///
/// Like Prometheus: linear interpolation inside the bucket holding the rank, the lowest bucket
/// starting at 0 when its bound is positive, the upper bound of the last finite bucket when the
/// rank falls in the `+Inf` bucket, and counts that go down between buckets treated as flat.
pub fn quantile(q: f64, buckets: &[Bucket]) -> Result<f64, String> {
    if !(0.0..=1.0).contains(&q) {
        return Err(format!("quantile {q} is outside 0..=1"));
    }
    let mut sorted: Vec<Bucket> = buckets.iter().copied().filter(|b| !b.le.is_nan()).collect();
    sorted.sort_by(|a, b| a.le.total_cmp(&b.le));
    sorted.dedup_by(|later, earlier| {
        // Same bound twice (e.g. several series summed by the caller elsewhere): add them up.
        if later.le == earlier.le {
            earlier.count += later.count;
            true
        } else {
            false
        }
    });
    match sorted.last() {
        None => return Err("the histogram has no buckets".to_owned()),
        Some(last) if last.le != f64::INFINITY => {
            return Err("the histogram has no +Inf bucket".to_owned());
        }
        Some(_) => {}
    }
    // Buckets are cumulative; a count that goes down is an artefact of scraping a moving
    // histogram and is flattened, as Prometheus does.
    let mut running_max = 0.0f64;
    for b in &mut sorted {
        running_max = running_max.max(b.count);
        b.count = running_max;
    }
    let total = sorted[sorted.len() - 1].count;
    if total <= 0.0 || total.is_nan() {
        return Err("no observations in the window".to_owned());
    }
    if sorted.len() < 2 {
        return Err("the histogram has only the +Inf bucket".to_owned());
    }
    let rank = q * total;
    let index = sorted
        .iter()
        .position(|b| b.count >= rank)
        .unwrap_or(sorted.len() - 1);
    if index == sorted.len() - 1 {
        // The rank is in the +Inf bucket: the best answer is the largest finite bound.
        return Ok(sorted[sorted.len() - 2].le);
    }
    let bucket = sorted[index];
    if index == 0 && bucket.le <= 0.0 {
        return Ok(bucket.le);
    }
    let (start, below) = if index == 0 {
        (0.0, 0.0)
    } else {
        (sorted[index - 1].le, sorted[index - 1].count)
    };
    let in_bucket = bucket.count - below;
    if in_bucket <= 0.0 {
        return Ok(bucket.le);
    }
    Ok(start + (bucket.le - start) * ((rank - below) / in_bucket))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(le, count)| Bucket { le, count })
            .collect()
    }

    #[test]
    fn interpolates_inside_the_bucket_holding_the_rank() {
        // 100 observations: 50 up to 0.1 s, 40 between 0.1 and 0.5 s, 10 between 0.5 and 1 s.
        let b = buckets(&[
            (0.1, 50.0),
            (0.5, 90.0),
            (1.0, 100.0),
            (f64::INFINITY, 100.0),
        ]);
        assert_eq!(quantile(0.5, &b).unwrap(), 0.1);
        // rank 95 lies halfway through the (0.5, 1] bucket.
        assert!((quantile(0.95, &b).unwrap() - 0.75).abs() < 1e-12);
        // rank 25 lies halfway through the first bucket, which starts at 0.
        assert!((quantile(0.25, &b).unwrap() - 0.05).abs() < 1e-12);
    }

    #[test]
    fn rank_in_the_inf_bucket_gives_the_largest_finite_bound() {
        let b = buckets(&[(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 100.0)]);
        assert_eq!(quantile(0.99, &b).unwrap(), 0.5);
    }

    #[test]
    fn order_of_buckets_does_not_matter_and_decreasing_counts_are_flattened() {
        let b = buckets(&[(f64::INFINITY, 10.0), (1.0, 10.0), (0.5, 4.0), (0.25, 5.0)]);
        // After flattening: 0.25→5, 0.5→5, 1→10. Rank 5 is reached at 0.25.
        assert_eq!(quantile(0.5, &b).unwrap(), 0.25);
    }

    #[test]
    fn empty_or_broken_histograms_are_errors() {
        assert!(quantile(0.5, &[]).unwrap_err().contains("no buckets"));
        let no_inf = buckets(&[(0.1, 1.0), (1.0, 2.0)]);
        assert!(quantile(0.5, &no_inf).unwrap_err().contains("+Inf"));
        let zero = buckets(&[(0.1, 0.0), (f64::INFINITY, 0.0)]);
        assert!(
            quantile(0.5, &zero)
                .unwrap_err()
                .contains("no observations")
        );
        assert!(quantile(1.5, &zero).is_err());
    }
}
