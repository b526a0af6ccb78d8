//! The latency sparkline of the status page: a small inline SVG drawn from a history
//! [`Summary`](super::history::Summary)'s points, with no script and no external asset.
//!
//! Latency is a line scaled from zero to the largest latency shown; groups with a failure
//! are red marks along the bottom, so a service that was down part of the time shows where.
//! Every number written is finite: the output never holds `NaN` or `inf`.

use std::fmt::Write as _;

use super::history::Point;

/// Width of the drawing, in CSS pixels.
pub const WIDTH: f64 = 120.0;
/// Height of the drawing, in CSS pixels.
pub const HEIGHT: f64 = 24.0;
/// Room kept below the line for the failure marks.
const MARK: f64 = 3.0;

/// The SVG element for `points`, oldest first.
pub fn svg(points: &[Point]) -> String {
    let mut out = String::with_capacity(256 + points.len() * 16);
    let max = points
        .iter()
        .filter_map(|p| p.latency)
        .filter(|l| l.is_finite())
        .fold(0.0_f64, f64::max);
    let downs = points.iter().filter(|p| p.down).count();
    let title = if points.is_empty() {
        "no results yet".to_string()
    } else if points.iter().all(|p| p.latency.is_none()) {
        format!("no success in {} groups of results", points.len())
    } else {
        format!(
            "latency, highest {:.3} ms; {downs} of {} groups with a failure",
            max * 1e3,
            points.len()
        )
    };
    let _ = write!(
        out,
        "<svg class=\"spark\" role=\"img\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         data-points=\"{}\"><title>{title}</title>",
        points.len()
    );
    if points.is_empty() {
        out.push_str("</svg>");
        return out;
    }
    let step = WIDTH / points.len() as f64;
    let x = |i: usize| (i as f64 + 0.5) * step;
    let y = |l: f64| {
        let top = 1.0;
        let bottom = HEIGHT - MARK - 1.0;
        let share = if max > 0.0 && l.is_finite() {
            (l / max).clamp(0.0, 1.0)
        } else {
            0.0
        };
        bottom - share * (bottom - top)
    };
    // One path for the line, broken where a group had no success.
    let mut d = String::new();
    let mut drawing = false;
    let mut alone = Vec::new();
    for (i, p) in points.iter().enumerate() {
        match p.latency {
            Some(l) => {
                let next_up = points.get(i + 1).is_some_and(|n| n.latency.is_some());
                if !drawing && !next_up {
                    // A success between failures is a dot: a path needs two points.
                    alone.push((x(i), y(l)));
                    continue;
                }
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if drawing { " L" } else { " M" },
                    x(i),
                    y(l)
                );
                drawing = true;
            }
            None => drawing = false,
        }
    }
    if !d.is_empty() {
        let _ = write!(
            out,
            "<path class=\"line\" d=\"{}\" fill=\"none\" stroke=\"#2a6fdb\" stroke-width=\"1.5\"/>",
            d.trim_start()
        );
    }
    for (cx, cy) in alone {
        let _ = write!(
            out,
            "<circle class=\"dot\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"1.5\" fill=\"#2a6fdb\"/>"
        );
    }
    let mark_width = step.max(1.0);
    for (i, p) in points.iter().enumerate() {
        if p.down {
            let _ = write!(
                out,
                "<rect class=\"fail\" x=\"{:.1}\" y=\"{:.1}\" width=\"{mark_width:.1}\" height=\"{MARK}\" fill=\"#c62828\"/>",
                (x(i) - mark_width / 2.0).max(0.0),
                HEIGHT - MARK
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(ms: f64) -> Point {
        Point {
            latency: Some(ms / 1e3),
            down: false,
        }
    }

    const DOWN: Point = Point {
        latency: None,
        down: true,
    };

    fn finite(svg: &str) {
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
    }

    #[test]
    fn no_points_is_an_empty_drawing_that_says_so() {
        let s = svg(&[]);
        finite(&s);
        assert!(s.contains("no results yet"), "{s}");
        assert!(!s.contains("<path") && !s.contains("<rect"), "{s}");
    }

    #[test]
    fn one_point_is_a_dot() {
        let s = svg(&[up(3.0)]);
        finite(&s);
        assert!(s.contains("<circle") && !s.contains("<path"), "{s}");
        let s = svg(&[DOWN]);
        finite(&s);
        assert!(
            s.contains("class=\"fail\"") && !s.contains("<circle"),
            "{s}"
        );
    }

    #[test]
    fn many_points_are_a_line_broken_at_failures() {
        let mut points: Vec<Point> = (0..50).map(|i| up(f64::from(i))).collect();
        points[20] = DOWN;
        let s = svg(&points);
        finite(&s);
        assert_eq!(
            s.matches(" M").count() + s.matches("d=\"M").count(),
            2,
            "{s}"
        );
        assert_eq!(s.matches("class=\"fail\"").count(), 1, "{s}");
        assert!(s.contains("data-points=\"50\""), "{s}");
        // The highest latency is at the top, zero at the bottom of the line's band.
        assert!(s.contains("d=\"M1.2 20.0"), "{s}");
        assert!(s.contains("highest 49.000 ms"), "{s}");
    }

    #[test]
    fn zero_and_odd_latencies_stay_finite() {
        finite(&svg(&[up(0.0), up(0.0), up(0.0)]));
        let odd = [
            Point {
                latency: Some(f64::NAN),
                down: false,
            },
            Point {
                latency: Some(f64::INFINITY),
                down: true,
            },
            up(1.0),
        ];
        finite(&svg(&odd));
    }
}
