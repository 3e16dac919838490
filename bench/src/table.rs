//! The results: one markdown table of figures with their targets.

/// What a figure is held against.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    AtLeast(f64, &'static str),
    AtMost(f64, &'static str),
    Between(f64, f64, &'static str),
    /// Reported, no target.
    None,
}

struct Row {
    scenario: String,
    metric: String,
    figure: String,
    target: String,
    verdict: &'static str,
}

/// The results, printed as one markdown table.
#[derive(Default)]
pub(crate) struct Table {
    rows: Vec<Row>,
}

impl Table {
    /// Adds a row; `value` is judged against `target`, `shown` is how it is printed.
    pub(crate) fn add(
        &mut self,
        scenario: &str,
        metric: &str,
        value: f64,
        shown: String,
        target: Target,
    ) {
        let (target, verdict) = match target {
            Target::AtLeast(t, unit) => (format!("≥ {}{unit}", short(t)), value >= t),
            Target::AtMost(t, unit) => (format!("≤ {}{unit}", short(t)), value <= t),
            Target::Between(lo, hi, unit) => (
                format!("{}–{}{unit}", short(lo), short(hi)),
                value >= lo && value <= hi,
            ),
            Target::None => (String::new(), true),
        };
        let verdict = match (target.is_empty(), verdict) {
            (true, _) => "",
            (false, true) => "PASS",
            (false, false) => "MISS",
        };
        eprintln!("  {scenario} · {metric}: {shown} {target} {verdict}");
        self.rows.push(Row {
            scenario: scenario.into(),
            metric: metric.into(),
            figure: shown,
            target,
            verdict,
        });
    }

    pub(crate) fn print(&self) {
        println!("| scenario | metric | figure | target | |");
        println!("|---|---|---:|---|---|");
        for r in &self.rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                r.scenario, r.metric, r.figure, r.target, r.verdict
            );
        }
    }
}

/// A number as a target shows it: `0.1`, `85%` is passed as `0.85` and
/// formatted by the caller's row text, so only plain numbers here.
fn short(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

pub(crate) fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// The `q` quantile (0..=1) of sorted values.
pub(crate) fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}
