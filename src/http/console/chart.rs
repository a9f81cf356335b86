//! The overview's chart, drawn on the server as SVG (no script, no external asset):
//! messages journaled per hour over the last 24 hours as bars, the backlog sampled each
//! minute as a line.

use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 160.0;
const PAD: f64 = 28.0;

/// `hours`: 24 counts, oldest first. `backlog`: (seconds before now, inputs in flight),
/// newest last, within 24 h.
pub fn throughput_and_backlog(hours: &[i64], backlog: &[(u64, u64)]) -> String {
    let max_n = hours.iter().copied().max().unwrap_or(0).max(1) as f64;
    let max_b = backlog.iter().map(|b| b.1).max().unwrap_or(0).max(1) as f64;
    let plot_w = W - 2.0 * PAD;
    let plot_h = H - 2.0 * PAD;
    let bar_w = plot_w / hours.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="Messages per hour and backlog over the last 24 hours" xmlns="http://www.w3.org/2000/svg">"#
    );
    let _ = write!(
        s,
        r#"<line x1="{PAD}" y1="{y}" x2="{x2}" y2="{y}" class="axis"/>"#,
        y = H - PAD,
        x2 = W - PAD
    );
    for (i, n) in hours.iter().enumerate() {
        let h = (*n as f64 / max_n) * plot_h;
        let x = PAD + i as f64 * bar_w;
        let _ = write!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}"><title>{n} message(s), {ago} h ago</title></rect>"#,
            y = H - PAD - h,
            w = (bar_w - 2.0).max(1.0),
            ago = hours.len() - i,
        );
    }
    if backlog.len() > 1 {
        let pts: Vec<String> = backlog
            .iter()
            .map(|(ago, b)| {
                let x = PAD + plot_w * (1.0 - (*ago as f64 / 86_400.0).min(1.0));
                let y = H - PAD - (*b as f64 / max_b) * plot_h;
                format!("{x:.1},{y:.1}")
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="backlog" points="{}"/>"#,
            pts.join(" ")
        );
    }
    let _ = write!(
        s,
        r#"<text x="{PAD}" y="16" class="legend">bars: messages per hour (max {max}) · {line}</text><text x="{PAD}" y="{yb}" class="legend">24 h ago</text><text x="{xr}" y="{yb}" class="legend" text-anchor="end">now</text></svg>"#,
        max = max_n as i64,
        line = if backlog.len() > 1 {
            format!("line: backlog (max {})", max_b as u64)
        } else {
            "backlog: sampled each minute, shown from the second sample on".to_string()
        },
        yb = H - 8.0,
        xr = W - PAD,
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_one_bar_per_hour_and_a_backlog_line() {
        let svg = throughput_and_backlog(&[0, 3, 1, 0], &[(3600, 2), (60, 5)]);
        assert_eq!(svg.matches("<rect").count(), 4);
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("3 message(s)"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
