//! SVG plots of a run, written by hand as text (no plotting crate):
//! latency by percentile on a "nines" axis (0, 90, 99, 99.9, 99.99, 100),
//! one curve overall and one per operation kind, and the requests
//! completed in each second of the run. Sans-IO: strings out.

use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::stats::Stats;

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 450.0;
/// Margins around the plot area: room for tick labels, axis labels, title.
const LEFT: f64 = 75.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 55.0;
const COLORS: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

/// Curve points per nine of the percentile axis.
const STEPS_PER_NINE: usize = 10;
/// The last finite nine shown (99.99 %); the maximum sits one nine further.
const NINES_SHOWN: usize = 4;
/// Points of each latency curve: 0 to 99.99 % in tenths of a nine, and the maximum.
pub const LATENCY_POINTS: usize = NINES_SHOWN * STEPS_PER_NINE + 2;

/// The two plots of a run: `(latency, throughput)`. `title` names the
/// workload and the endpoints.
pub fn render(title: &str, stats: &Stats, elapsed: Duration) -> (String, String) {
    let mut series: Vec<(String, &Histogram<u64>)> = vec![(format!("all (n={})", stats.ok()), &stats.latency)];
    if stats.ops.iter().filter(|op| op.ok() > 0).count() > 1 {
        for op in stats.ops.iter().filter(|op| op.ok() > 0) {
            series.push((format!("{} (n={})", op.name, op.ok()), &op.latency));
        }
    }
    let latency = latency_svg(&format!("corekv-bench {title}: latency by percentile"), &series);
    let throughput =
        throughput_svg(&format!("corekv-bench {title}: throughput"), &stats.timeline, elapsed.as_secs_f64());
    (latency, throughput)
}

/// Where percentile `p` (0 to 100) sits on the nines axis: `-log10(1 - p/100)`,
/// so 0 → 0, 90 → 1, 99 → 2, 99.9 → 3; 100 is drawn at `NINES_SHOWN + 1`.
pub fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        return (NINES_SHOWN + 1) as f64;
    }
    -(1.0 - p / 100.0).log10()
}

/// The latency curve of each `(name, histogram)` (ns), in milliseconds.
pub fn latency_svg(title: &str, series: &[(String, &Histogram<u64>)]) -> String {
    let curves: Vec<(&str, Vec<(f64, f64)>)> =
        series.iter().filter(|(_, h)| !h.is_empty()).map(|(name, h)| (name.as_str(), latency_points(h))).collect();
    let y_max = curves.iter().flat_map(|(_, points)| points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let frame = Frame::new((NINES_SHOWN + 1) as f64, y_max);
    let x_ticks: Vec<(f64, String)> =
        [0.0, 90.0, 99.0, 99.9, 99.99, 100.0].into_iter().map(|p| (nines(p), p.to_string())).collect();
    let subtitle = match series.first() {
        Some((_, h)) if !h.is_empty() => format!(
            "p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms (all requests)",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        ),
        _ => "no successful request".to_string(),
    };
    let mut out = open(title, &subtitle);
    frame.axes(&mut out, &x_ticks, "percentile (nines scale; 100 = max)", "latency (ms)");
    for (i, (name, points)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        frame.polyline(&mut out, points, color, if i == 0 { Line::Bold } else { Line::Thin });
        frame.legend(&mut out, i, name, color);
    }
    close(out)
}

/// `(nines, ms)` from 0 to 99.99 % in tenths of a nine, then the maximum.
fn latency_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(LATENCY_POINTS);
    points.extend((0..=NINES_SHOWN * STEPS_PER_NINE).map(|step| {
        let x = step as f64 / STEPS_PER_NINE as f64;
        let quantile = 1.0 - 10f64.powf(-x);
        (x, h.value_at_quantile(quantile) as f64 / 1e6)
    }));
    points.push(((NINES_SHOWN + 1) as f64, h.max() as f64 / 1e6));
    points
}

/// Requests completed per second: `timeline[i]` over second `i` of a run
/// of `elapsed_s` seconds, plotted at the middle of its second. The last,
/// partial second is scaled to its length, and left out when shorter than
/// half a second (too few requests to mean a rate).
pub fn throughput_svg(title: &str, timeline: &[u64], elapsed_s: f64) -> String {
    let points = throughput_points(timeline, elapsed_s);
    let total: u64 = timeline.iter().sum();
    let mean = if elapsed_s > 0.0 { total as f64 / elapsed_s } else { 0.0 };
    // The axis ends with the run (a partial last second left out of the
    // curve still shows as time).
    let x_max = if elapsed_s > 0.0 { elapsed_s } else { timeline.len().max(1) as f64 };
    let y_max = points.iter().map(|p| p.1).fold(mean, f64::max);
    let frame = Frame::new(x_max, y_max);
    let (step, _) = nice(x_max, 10);
    let x_ticks: Vec<(f64, String)> =
        (0..).map(|i| i as f64 * step).take_while(|&x| x <= x_max + 1e-9).map(|x| (x, label(x, step))).collect();
    let subtitle = format!("{total} requests completed in {elapsed_s:.2} s, mean {mean:.1}/s (dashed)");
    let mut out = open(title, &subtitle);
    frame.axes(&mut out, &x_ticks, "time since the start (s)", "requests completed per second");
    if mean > 0.0 {
        frame.polyline(&mut out, &[(0.0, mean), (elapsed_s, mean)], "#7f7f7f", Line::Dashed);
    }
    frame.polyline(&mut out, &points, COLORS[0], Line::Bold);
    close(out)
}

fn throughput_points(timeline: &[u64], elapsed_s: f64) -> Vec<(f64, f64)> {
    let mut points = Vec::with_capacity(timeline.len());
    for (i, &count) in timeline.iter().enumerate() {
        let width = if i + 1 < timeline.len() { 1.0 } else { (elapsed_s - i as f64).clamp(0.0, 1.0) };
        // A last second cut short by rounding still counts whole if the
        // run's length does not say otherwise.
        let width = if width == 0.0 && i + 1 == timeline.len() && elapsed_s <= i as f64 { 1.0 } else { width };
        if width >= 0.5 {
            points.push((i as f64 + width / 2.0, count as f64 / width));
        }
    }
    points
}

/// How a curve is drawn.
#[derive(Clone, Copy)]
enum Line {
    Bold,
    Thin,
    Dashed,
}

/// The plot area and its scales.
struct Frame {
    x_max: f64,
    y_max: f64,
    y_step: f64,
}

impl Frame {
    /// A frame from 0 to `x_max` and from 0 to a round number above `y_max`.
    fn new(x_max: f64, y_max: f64) -> Frame {
        let (y_step, y_top) = nice(y_max, 6);
        Frame { x_max: x_max.max(1e-9), y_max: y_top, y_step }
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + x / self.x_max * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - y / self.y_max * (HEIGHT - TOP - BOTTOM)
    }

    /// Grid, axes, tick labels and axis labels.
    fn axes(&self, out: &mut String, x_ticks: &[(f64, String)], x_label: &str, y_label: &str) {
        let (x0, x1, y0, y1) = (self.px(0.0), self.px(self.x_max), self.py(0.0), self.py(self.y_max));
        for (x, text) in x_ticks {
            let px = self.px(*x);
            let _ = writeln!(out, r##"<line x1="{px:.1}" y1="{y1:.1}" x2="{px:.1}" y2="{y0:.1}" stroke="#e5e5e5"/>"##);
            let _ =
                writeln!(out, r#"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{:.1}" stroke="black"/>"#, y0 + 5.0);
            let _ =
                writeln!(out, r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, y0 + 18.0, escape(text));
        }
        let ticks = (self.y_max / self.y_step).round() as usize;
        for i in 0..=ticks {
            let y = i as f64 * self.y_step;
            let py = self.py(y);
            let _ = writeln!(out, r##"<line x1="{x0:.1}" y1="{py:.1}" x2="{x1:.1}" y2="{py:.1}" stroke="#e5e5e5"/>"##);
            let _ =
                writeln!(out, r#"<line x1="{:.1}" y1="{py:.1}" x2="{x0:.1}" y2="{py:.1}" stroke="black"/>"#, x0 - 5.0);
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 8.0,
                py + 4.0,
                escape(&label(y, self.y_step))
            );
        }
        let _ = writeln!(out, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="black"/>"#);
        let _ = writeln!(out, r#"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="black"/>"#);
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            HEIGHT - 12.0,
            escape(x_label)
        );
        let (lx, ly) = (18.0, (y0 + y1) / 2.0);
        let _ = writeln!(
            out,
            r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{}</text>"#,
            escape(y_label)
        );
    }

    /// A line through `points` (data coordinates).
    fn polyline(&self, out: &mut String, points: &[(f64, f64)], color: &str, line: Line) {
        if points.is_empty() {
            return;
        }
        let mut coords = String::with_capacity(points.len() * 14);
        for (i, &(x, y)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let _ = write!(coords, "{sep}{:.1},{:.1}", self.px(x), self.py(y));
        }
        let style = match line {
            Line::Bold => r#"stroke-width="2""#,
            Line::Thin => r#"stroke-width="1.3""#,
            Line::Dashed => r#"stroke-width="1.3" stroke-dasharray="6 4""#,
        };
        let _ = writeln!(out, r#"<polyline fill="none" stroke="{color}" {style} points="{coords}"/>"#);
    }

    /// Entry `i` of the legend, top left inside the plot area.
    fn legend(&self, out: &mut String, i: usize, name: &str, color: &str) {
        let (x, y) = (self.px(0.0) + 12.0, self.py(self.y_max) + 14.0 + i as f64 * 16.0);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="2"/>"#,
            x + 22.0
        );
        let _ = writeln!(out, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, x + 28.0, y + 4.0, escape(name));
    }
}

/// The SVG's start: background, title and subtitle.
fn open(title: &str, subtitle: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, "<title>{}</title>", escape(title));
    let _ = writeln!(out, r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<text x="{:.1}" y="40" text-anchor="middle" fill="#555555">{}</text>"##,
        WIDTH / 2.0,
        escape(subtitle)
    );
    out
}

fn close(mut out: String) -> String {
    out.push_str("</svg>\n");
    out
}

/// A step of 1, 2 or 5 × 10^k giving about `ticks` ticks up to `max`, and
/// the first multiple of it at or above `max`.
fn nice(max: f64, ticks: usize) -> (f64, f64) {
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return (1.0, 1.0);
    }
    let raw = max / ticks as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|&s| s >= raw).expect("10 × magnitude ≥ raw");
    let top = (max / step - 1e-9).ceil().max(1.0) * step;
    (step, top)
}

/// A tick value with as many decimals as its step needs.
fn label(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{value:.decimals$}")
}

fn ms(nanos: u64) -> String {
    format!("{:.3}", nanos as f64 / 1e6)
}

/// Text and attribute values with `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `points` attribute of every polyline, split into points.
    fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
        svg.match_indices("<polyline")
            .map(|(at, _)| {
                let rest = &svg[at..];
                let start = rest.find("points=\"").unwrap() + "points=\"".len();
                let end = start + rest[start..].find('"').unwrap();
                rest[start..end]
                    .split(' ')
                    .map(|p| {
                        let (x, y) = p.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    /// Every element opened is closed or self-closing, and no raw `&` or
    /// `<` is left in text.
    fn assert_well_formed(svg: &str) {
        assert!(svg.starts_with("<svg "), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
        for tag in ["svg", "text", "title"] {
            assert_eq!(svg.matches(&format!("<{tag}")).count(), svg.matches(&format!("</{tag}>")).count(), "{tag}");
        }
        for element in ["line", "polyline", "rect"] {
            let opened = svg.matches(&format!("<{element} ")).count();
            let closed = svg
                .split(&format!("<{element} "))
                .skip(1)
                .filter(|rest| rest.split('>').next().unwrap().ends_with('/'))
                .count();
            assert_eq!(opened, closed, "{element}");
        }
        for (at, _) in svg.match_indices('&') {
            let entity = &svg[at..svg[at..].find(';').map_or(svg.len(), |e| at + e + 1)];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity), "raw & at {at}: {entity}");
        }
    }

    #[test]
    fn the_nines_axis_puts_each_nine_one_step_further() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(nines(0.0), 0.0) && close(nines(90.0), 1.0) && close(nines(99.0), 2.0));
        assert!(close(nines(99.9), 3.0) && close(nines(99.99), 4.0) && close(nines(100.0), 5.0));
    }

    #[test]
    fn latency_plots_draw_one_curve_per_series_from_min_to_max() {
        let mut fast = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let mut slow = fast.clone();
        for i in 1..=10_000u64 {
            fast.record(i * 100).unwrap(); // 0.1 µs .. 1 ms
            slow.record(i * 1000).unwrap(); // 1 µs .. 10 ms
        }
        let empty = fast.clone();
        let mut empty = empty;
        empty.reset();
        let series = vec![("all".to_string(), &fast), ("slow <b>".to_string(), &slow), ("none".to_string(), &empty)];
        let svg = latency_svg("k8s on 127.0.0.1:1 & \"friends\"", &series);
        assert_well_formed(&svg);
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2, "the empty series draws nothing");
        assert!(lines.iter().all(|l| l.len() == LATENCY_POINTS));
        // Left to right, never down (in SVG, y grows downwards).
        for line in &lines {
            assert!(line.windows(2).all(|w| w[1].0 > w[0].0 && w[1].1 <= w[0].1 + 1e-9), "{line:?}");
        }
        // The slow curve's max (10 ms) is the top of the data, at the right edge.
        let last = lines[1].last().unwrap();
        assert!((last.0 - (WIDTH - RIGHT)).abs() < 0.1);
        assert!(svg.contains("slow &lt;b&gt;") && !svg.contains("<b>"));
        assert!(svg.contains("k8s on 127.0.0.1:1 &amp; &quot;friends&quot;"));
        for tick in [">0<", ">90<", ">99<", ">99.9<", ">99.99<", ">100<", "latency (ms)"] {
            assert!(svg.contains(tick), "{tick}");
        }
    }

    #[test]
    fn throughput_plots_one_point_per_second_and_a_mean() {
        // 5.2 s: the last 0.2 s is too short to plot; 5.6 s: scaled.
        let svg = throughput_svg("put on a:1", &[100, 200, 300, 200, 100, 10], 5.2);
        assert_well_formed(&svg);
        let lines = polylines(&svg);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 2, "the mean line");
        assert_eq!(lines[1].len(), 5);
        assert!(svg.contains("910 requests completed in 5.20 s"));
        let lines = polylines(&throughput_svg("t", &[100, 200, 300, 200, 100, 60], 5.6));
        assert_eq!(lines[1].len(), 6);
        let (a, b) = (lines[1][0], lines[1][5]);
        assert!((a.1 - b.1).abs() < 0.5, "60 in 0.6 s plots as 100/s like the first second: {a:?} {b:?}");
        // Nothing at all still makes a valid plot.
        let empty = throughput_svg("t", &[], 0.0);
        assert_well_formed(&empty);
        assert!(!empty.contains("<polyline"));
    }

    #[test]
    fn render_adds_a_curve_per_operation_kind() {
        let mut stats = Stats::with_ops(&["get", "put", "compact"]);
        for i in 0..100 {
            stats.record_op_ok(i % 2, Duration::from_micros(100 + i as u64), Duration::from_millis(i as u64 * 20));
        }
        let (latency, throughput) = render("k8s on x:1", &stats, Duration::from_secs(2));
        assert_eq!(polylines(&latency).len(), 3, "all, get and put; compact had no request");
        assert!(latency.contains("get (n=50)") && latency.contains("all (n=100)"));
        assert!(throughput.contains("<title>corekv-bench k8s on x:1: throughput</title>"));
        let (latency, _) = render("put", &Stats::new(), Duration::ZERO);
        assert_well_formed(&latency);
        assert!(latency.contains("no successful request") && !latency.contains("<polyline"));
    }

    #[test]
    fn scales_are_round() {
        assert_eq!(nice(7.3, 6), (2.0, 8.0));
        assert_eq!(nice(0.42, 6), (0.1, 0.5));
        assert_eq!(nice(1000.0, 10), (100.0, 1000.0));
        assert_eq!(nice(0.0, 6), (1.0, 1.0));
        assert_eq!(label(0.30000000000000004, 0.1), "0.3");
        assert_eq!(label(2500.0, 500.0), "2500");
    }
}
