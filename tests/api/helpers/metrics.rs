/// The text of one `GET /metrics` scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample whose name and labels are exactly `series`, e.g.
    /// `herald_connections_open` or `herald_errors_total{code="invalid_json"}`.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(name, _)| same_series(name, series))
            .map(|(_, value)| value.parse().unwrap_or_else(|e| panic!("bad value for {series}: {value:?} ({e})")))
    }

    /// Like [`Metrics::value`], with a missing series counting as 0 (how Prometheus treats a counter
    /// that has not been incremented yet).
    pub fn counter(&self, series: &str) -> f64 {
        self.value(series).unwrap_or(0.0)
    }

    /// The sum of every series of a family (0 when it has none yet).
    pub fn sum(&self, family: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.rsplit_once(' '))
            .filter(|(name, _)| name.split('{').next() == Some(family))
            .map(|(_, value)| value.parse::<f64>().unwrap_or(0.0))
            .sum()
    }

    pub fn text(&self) -> &str {
        &self.0
    }

    /// The declared `# TYPE` of a metric family.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.0.lines().find_map(|line| {
            let rest = line.strip_prefix("# TYPE ")?;
            let (name, kind) = rest.split_once(' ')?;
            (name == family).then_some(kind.trim())
        })
    }
}

/// Compares series names, ignoring the order of labels (exporters are free to order them).
fn same_series(found: &str, wanted: &str) -> bool {
    fn split(s: &str) -> (&str, Vec<&str>) {
        match s.split_once('{') {
            Some((name, labels)) => {
                let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
                labels.sort_unstable();
                (name, labels)
            }
            None => (s, Vec::new()),
        }
    }
    split(found.trim()) == split(wanted)
}
