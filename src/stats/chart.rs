//! The dashboard's "viewers over the last hour" chart, drawn on the server as
//! a small self-contained SVG (no script, no external fonts or styles).

use std::fmt::Write;

use crate::audience::Sample;

const W: f64 = 1200.0;
const H: f64 = 220.0;
const LEFT: f64 = 40.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 26.0;

/// The smallest "nice" number (1, 2 or 5 times a power of ten) ≥ `x`.
fn nice_ceiling(x: u64) -> u64 {
    let mut p = 1u64;
    loop {
        for m in [1, 2, 5] {
            if m * p >= x {
                return m * p;
            }
        }
        p = p.saturating_mul(10);
    }
}

/// An SVG of `samples` (oldest first, evenly spaced).
pub fn viewers_svg(samples: &[Sample]) -> String {
    let peak = samples.iter().map(|s| s.viewers).max().unwrap_or(0);
    let now = samples.last().map_or(0, |s| s.viewers);
    // Four grid steps of a nice size: 1, 2, 5, 10, 20 … viewers each.
    let top = 4 * nice_ceiling(peak.div_ceil(4).max(1));
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let n = samples.len().max(2) - 1;
    let x = |i: usize| LEFT + pw * i as f64 / n as f64;
    let y = |v: u64| TOP + ph * (1.0 - v as f64 / top as f64);
    let mut svg = String::with_capacity(4096);
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-labelledby="viewers-chart-title" font-family="system-ui, sans-serif" font-size="11">"##
    );
    let _ = write!(
        svg,
        r##"<title id="viewers-chart-title">Viewers over the last hour: {now} now, at most {peak}</title>"##
    );
    svg.push_str(concat!(
        r##"<defs><linearGradient id="viewers-fill" x1="0" y1="0" x2="0" y2="1">"##,
        r##"<stop offset="0" stop-color="#8b7bff" stop-opacity="0.45"/>"##,
        r##"<stop offset="1" stop-color="#8b7bff" stop-opacity="0.02"/>"##,
        r##"</linearGradient></defs>"##
    ));
    // Horizontal grid with the counts.
    for step in 0..=4u64 {
        let v = top * step / 4;
        let yy = y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#2a3140" stroke-width="1"/><text x="{}" y="{:.1}" fill="#9aa3b5" text-anchor="end">{v}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0
        );
    }
    // Minutes ago along the bottom.
    for (frac, label) in [
        (0.0, "−60 min"),
        (0.25, "−45"),
        (0.5, "−30"),
        (0.75, "−15"),
        (1.0, "now"),
    ] {
        let anchor = match frac {
            0.0 => "start",
            1.0 => "end",
            _ => "middle",
        };
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{}" fill="#9aa3b5" text-anchor="{anchor}">{label}</text>"##,
            LEFT + pw * frac,
            H - 8.0
        );
    }
    if !samples.is_empty() {
        let mut line = String::new();
        for (i, s) in samples.iter().enumerate() {
            let _ = write!(
                line,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(i),
                y(s.viewers)
            );
        }
        let last = samples.len() - 1;
        let _ = write!(
            svg,
            r##"<path d="{line} L{:.1},{:.1} L{:.1},{:.1} Z" fill="url(#viewers-fill)"/>"##,
            x(last),
            y(0),
            x(0),
            y(0)
        );
        let _ = write!(
            svg,
            r##"<path d="{line}" fill="none" stroke="#8b7bff" stroke-width="2" stroke-linejoin="round"/>"##
        );
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#ff7ac6"/>"##,
            x(last),
            y(now)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_chart_is_an_svg_with_the_numbers() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| Sample {
                at_ms: i * 30_000,
                viewers: (i % 17) as u64,
            })
            .collect();
        let svg = viewers_svg(&samples);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("at most 16"), "{svg}");
        assert!(
            svg.contains(">20</text>"),
            "the scale tops at a nice number"
        );
        assert!(svg.contains(">5</text>") && svg.contains(">15</text>"));
        assert!(viewers_svg(&[]).contains("</svg>"));
        assert_eq!(nice_ceiling(7), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(200), 200);
    }
}
