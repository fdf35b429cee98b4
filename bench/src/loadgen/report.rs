//! The report: reads the result files of one `scripts/bench` run, writes the markdown
//! section of `BENCHMARKS.md` between its markers (the rest of the file is left as it
//! is) and the SVG charts beside the results.
//!
//! Each comparison is made of figures measured in the same invocation on the same
//! machine; a ratio is Emporium's throughput over the baseline's, each at its best
//! concurrency of the sweep, and again at each concurrency both were run at. Targets
//! are printed with whether they were met — shortfalls included.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::stats::{us, Point};
use super::workloads::flash::NO_OVERSELL;

/// The marker lines the section lives between.
pub const BEGIN: &str = "<!-- loadgen:begin -->";
/// The closing marker.
pub const END: &str = "<!-- loadgen:end -->";

/// One result file: every point of one workload on one system.
#[derive(Serialize, Deserialize, Debug)]
pub struct Results {
    /// The workload.
    pub workload: String,
    /// The system.
    pub system: String,
    /// When it ran (RFC 3339, UTC).
    pub finished_at: String,
    /// The points.
    pub points: Vec<Point>,
}

/// Writes `results` as `dir/{workload}.{system}.json`.
pub fn save(dir: &Path, results: &Results) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.{}.json", results.workload, results.system));
    std::fs::write(&path, serde_json::to_vec_pretty(results)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Every point in the result files of `dir`.
pub fn load(dir: &Path) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read(&path)?;
        let results: Results =
            serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
        points.extend(results.points);
    }
    Ok(points)
}

/// A comparison the issue asks for.
struct Comparison {
    title: &'static str,
    workload: &'static str,
    variant: &'static str,
    baseline: &'static str,
    baseline_workload: &'static str,
    baseline_variant: &'static str,
    /// The target ratio, if there is one.
    target: Option<f64>,
}

const COMPARISONS: [Comparison; 8] = [
    Comparison {
        title: "product GET (keep-alive) vs nginx static file",
        workload: "product-get",
        variant: "",
        baseline: "nginx",
        baseline_workload: "product-get",
        baseline_variant: "",
        target: Some(0.7),
    },
    Comparison {
        title: "add-to-cart (durable) vs nginx static file",
        workload: "add-to-cart",
        variant: "",
        baseline: "nginx",
        baseline_workload: "product-get",
        baseline_variant: "",
        target: None,
    },
    Comparison {
        title: "flash-sale purchases (signed-in, capped) vs PostgreSQL, one transaction each",
        workload: "flash-sale",
        variant: "rate",
        baseline: "postgres",
        baseline_workload: "flash-sale",
        baseline_variant: "rate",
        target: Some(15.0),
    },
    Comparison {
        title: "flash-sale purchases (signed-in, capped) vs Redis Lua (cap + decrement)",
        workload: "flash-sale",
        variant: "rate",
        baseline: "redis",
        baseline_workload: "flash-sale",
        baseline_variant: "rate",
        target: Some(1.0),
    },
    Comparison {
        title: "flash-sale sold-out answers vs Emporium's own product GET",
        workload: "flash-sale",
        variant: "sold-out",
        baseline: "emporium",
        baseline_workload: "product-get",
        baseline_variant: "",
        target: Some(0.9),
    },
    Comparison {
        title: "flash-sale sold-out answers vs Redis Lua sold-out answers",
        workload: "flash-sale",
        variant: "sold-out",
        baseline: "redis",
        baseline_workload: "flash-sale",
        baseline_variant: "sold-out",
        target: None,
    },
    Comparison {
        title: "checkout-heavy (5–15 lines, 100k SKUs) vs PostgreSQL",
        workload: "checkout-heavy",
        variant: "uniform",
        baseline: "postgres",
        baseline_workload: "checkout-heavy",
        baseline_variant: "uniform",
        target: Some(10.0),
    },
    Comparison {
        title: "checkout-heavy, one line always the hot SKU, vs PostgreSQL",
        workload: "checkout-heavy",
        variant: "hot",
        baseline: "postgres",
        baseline_workload: "checkout-heavy",
        baseline_variant: "hot",
        target: Some(30.0),
    },
];

fn select<'a>(points: &'a [Point], system: &str, workload: &str, variant: &str) -> Vec<&'a Point> {
    let mut out: Vec<&Point> = points
        .iter()
        .filter(|p| {
            p.system == system
                && p.workload == workload
                && p.variant == variant
                && p.mode == "closed"
        })
        .collect();
    out.sort_by_key(|p| p.clients);
    out
}

fn best<'a>(points: &[&'a Point]) -> Option<&'a Point> {
    points.iter().copied().max_by(|a, b| a.throughput.total_cmp(&b.throughput))
}

fn cell(p: &Point) -> String {
    format!(
        "{} /s (p50 {}, p99 {}) at {} client{}",
        thousands(p.throughput),
        us(p.latency.p50_us),
        us(p.latency.p99_us),
        p.clients,
        if p.clients == 1 { "" } else { "s" }
    )
}

/// `12345.6` as `12,346`.
pub fn thousands(value: f64) -> String {
    let n = value.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ratio_text(ratio: f64) -> String {
    if ratio >= 10.0 {
        format!("{ratio:.0}×")
    } else {
        format!("{ratio:.2}×")
    }
}

/// The markdown section (without the markers).
pub fn markdown(points: &[Point], charts: &[(String, String)], context: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "## Load generator: Emporium beside PostgreSQL, Redis and nginx\n");
    md.push_str(context);
    md.push('\n');
    headline(&mut md, points);
    cpu_per_unit(&mut md, points);
    per_concurrency(&mut md, points);
    correctness(&mut md, points);
    storefront(&mut md, points);
    all_points(&mut md, points);
    if !charts.is_empty() {
        let _ = writeln!(md, "### Charts\n");
        for (title, path) in charts {
            let _ = writeln!(md, "**{title}**\n\n![{title}]({path})\n");
        }
    }
    md
}

fn headline(md: &mut String, points: &[Point]) {
    let _ = writeln!(
        md,
        "### Headline: each system at its best concurrency of the sweep\n\n\
         | comparison | Emporium | baseline | Emporium / baseline | target | met |\n\
         |---|---|---|---|---|---|"
    );
    for c in &COMPARISONS {
        let ours = best(&select(points, "emporium", c.workload, c.variant));
        let theirs = best(&select(points, c.baseline, c.baseline_workload, c.baseline_variant));
        let (Some(ours), Some(theirs)) = (ours, theirs) else {
            let _ = writeln!(md, "| {} | not measured | not measured | | | |", c.title);
            continue;
        };
        let ratio = ours.throughput / theirs.throughput.max(1e-9);
        let (target, met) = match c.target {
            Some(t) if ratio >= t => (format!("≥ {}", ratio_text(t)), "yes"),
            Some(t) => (format!("≥ {}", ratio_text(t)), "**no**"),
            None => ("—".to_string(), "—"),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} ({}) | **{}** | {target} | {met} |",
            c.title,
            cell(ours),
            cell(theirs),
            c.baseline,
            ratio_text(ratio)
        );
    }
    md.push('\n');
}

/// The hot path's cost: each system's CPU time per measured unit, at its best
/// concurrency of the sweep (the server's process only, its children included).
fn cpu_per_unit(md: &mut String, points: &[Point]) {
    const RUNS: [(&str, &str); 3] =
        [("flash-sale", "rate"), ("flash-sale", "sold-out"), ("product-get", "")];
    let mut rows = Vec::new();
    for (workload, variant) in RUNS {
        for system in ["emporium", "redis", "postgres", "nginx"] {
            let Some(p) = best(&select(points, system, workload, variant)) else { continue };
            let Some(cores) = p.server_cores else { continue };
            let per_unit = cores / p.throughput.max(1e-9) * 1e6;
            rows.push(format!(
                "| {workload}{} | {system} | {} | {} | {cores:.2} | **{per_unit:.1} µs** |",
                if variant.is_empty() { String::new() } else { format!(" {variant}") },
                p.unit,
                cell(p),
            ));
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Server CPU per request\n\n\
         Each system at its best concurrency: the cores its server process was busy over the \
         window, divided by its rate (the server's own threads only; the load generator's \
         cost is separate).\n\n\
         | run | system | unit | rate | server cores | CPU per unit |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        let _ = writeln!(md, "{row}");
    }
    md.push('\n');
}

fn per_concurrency(md: &mut String, points: &[Point]) {
    let _ = writeln!(
        md,
        "### Ratios at equal concurrency\n\n\
         | comparison | clients | Emporium /s | p50 / p99 | baseline /s | p50 / p99 | ratio |\n\
         |---|---|---|---|---|---|---|"
    );
    for c in &COMPARISONS {
        let ours = select(points, "emporium", c.workload, c.variant);
        let theirs = select(points, c.baseline, c.baseline_workload, c.baseline_variant);
        for o in &ours {
            let Some(t) = theirs.iter().find(|t| t.clients == o.clients) else { continue };
            let variant = if c.variant.is_empty() || c.variant == "rate" {
                String::new()
            } else {
                format!(" {}", c.variant)
            };
            let _ = writeln!(
                md,
                "| {}{variant} ({}) | {} | {} | {} / {} | {} | {} / {} | {} |",
                c.workload,
                c.baseline,
                o.clients,
                thousands(o.throughput),
                us(o.latency.p50_us),
                us(o.latency.p99_us),
                thousands(t.throughput),
                us(t.latency.p50_us),
                us(t.latency.p99_us),
                ratio_text(o.throughput / t.throughput.max(1e-9))
            );
        }
    }
    md.push('\n');
}

fn correctness(md: &mut String, points: &[Point]) {
    let _ = writeln!(
        md,
        "### Correctness of every run\n\n\
         Every answer is checked (status, media type, body shape); after each run the stock \
         is read back from the server and compared with what the clients were told.\n\n\
         | system | workload | clients | answers | 5xx | malformed | unexpected | units sold / stock | verdict |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for p in points {
        let sold = match (p.checks.units_sold, p.checks.units_stock) {
            (Some(s), Some(t)) => format!("{} / {}", thousands(s as f64), thousands(t as f64)),
            _ => "—".to_string(),
        };
        let verdict = if p.checks.passed() { "PASS".to_string() } else { "**FAIL**".to_string() };
        let variant = if p.variant.is_empty() { String::new() } else { format!(" {}", p.variant) };
        let _ = writeln!(
            md,
            "| {} | {}{variant} | {} | {} | {} | {} | {} | {sold} | {verdict} |",
            p.system,
            p.workload,
            p.clients,
            thousands(p.checks.answers as f64),
            p.checks.server_errors,
            p.checks.malformed,
            p.checks.unexpected + p.checks.transport,
        );
    }
    let sellouts: Vec<&Point> = points.iter().filter(|p| p.variant == "sell-out").collect();
    if !sellouts.is_empty() {
        let oversold = sellouts
            .iter()
            .any(|p| p.checks.assertions.iter().any(|a| a.what == NO_OVERSELL && !a.holds));
        let _ = writeln!(
            md,
            "\nSell-out rounds ({}), every check made after each:\n",
            if oversold { "**units oversold**" } else { "no unit oversold on any system" }
        );
        for p in sellouts {
            let details: Vec<String> = p
                .checks
                .assertions
                .iter()
                .map(|a| {
                    format!(
                        "{} — {} ({})",
                        a.what,
                        if a.holds { "holds" } else { "FAILS" },
                        a.detail
                    )
                })
                .collect();
            let _ = writeln!(md, "- **{}**: {}", p.system, details.join("; "));
        }
    }
    md.push('\n');
}

fn storefront(md: &mut String, points: &[Point]) {
    let runs: Vec<&Point> = points.iter().filter(|p| p.workload == "storefront").collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Storefront (TPC-W shopping mix)\n\n\
         Weights and the mapping of TPC-W's interactions are documented in \
         `bench/src/loadgen/workloads/storefront.rs`.\n"
    );
    for p in runs {
        let load = match p.rate {
            Some(rate) => {
                format!("open loop, {} arrivals/s over {} connections", thousands(rate), p.clients)
            }
            None => format!("closed loop, {} clients", p.clients),
        };
        let _ = writeln!(
            md,
            "**{load}**: {} interactions/s, p50 {}, p99 {}, p99.9 {}.\n\n\
             | request | answers | per second | p50 | p99 | statuses |\n|---|---|---|---|---|---|",
            thousands(p.throughput),
            us(p.latency.p50_us),
            us(p.latency.p99_us),
            us(p.latency.p999_us)
        );
        for op in p.ops.iter().filter(|o| o.name != p.unit) {
            let statuses: Vec<String> =
                op.statuses.iter().map(|(s, n)| format!("{s}: {}", thousands(*n as f64))).collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                op.name,
                thousands((op.ok + op.refused + op.errors()) as f64),
                thousands(op.throughput),
                us(op.latency.p50_us),
                us(op.latency.p99_us),
                statuses.join(", ")
            );
        }
        for note in &p.notes {
            let _ = writeln!(md, "\n- {note}");
        }
        md.push('\n');
    }
}

fn all_points(md: &mut String, points: &[Point]) {
    let _ = writeln!(
        md,
        "### Every measured point\n\n\
         | workload | system | mode | clients | unit | per second | p50 | p90 | p99 | p99.9 | window | cores: server / generator / machine |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in points {
        let variant = if p.variant.is_empty() { String::new() } else { format!(" {}", p.variant) };
        let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
        let mut cores = format!(
            "{} / {} / {}",
            show(p.server_cores),
            show(p.generator_cores),
            show(p.machine_cores)
        );
        if let Some(stolen) = p.stolen_cores.filter(|&s| s >= 0.01) {
            let _ = write!(cores, " ({stolen:.2} stolen)");
        }
        let _ = writeln!(
            md,
            "| {}{variant} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {cores} |",
            p.workload,
            p.system,
            p.mode,
            p.clients,
            p.unit,
            thousands(p.throughput),
            us(p.latency.p50_us),
            us(p.latency.p90_us),
            us(p.latency.p99_us),
            us(p.latency.p999_us),
            p.window_s
        );
    }
    group_commit(md, points);
    // Notes of every point of a run; one that only some points carry names them.
    let mut runs: BTreeMap<String, Vec<&Point>> = BTreeMap::new();
    for p in points {
        let key = [p.workload.as_str(), p.variant.as_str(), p.system.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        runs.entry(key).or_default().push(p);
    }
    let _ = writeln!(md, "\nNotes by run:\n");
    for (key, run) in runs {
        let mut lines: Vec<String> = Vec::new();
        for p in &run {
            for note in &p.notes {
                let everywhere = run.iter().all(|q| q.notes.contains(note));
                let line = if everywhere {
                    note.clone()
                } else {
                    format!(
                        "at {} client{}, {note}",
                        p.clients,
                        if p.clients == 1 { "" } else { "s" }
                    )
                };
                if !lines.contains(&line) {
                    lines.push(line);
                }
            }
        }
        if !lines.is_empty() {
            let _ = writeln!(md, "- {key}: {}", lines.join("; "));
        }
    }
    md.push('\n');
}

fn group_commit(md: &mut String, points: &[Point]) {
    let with: Vec<&Point> = points.iter().filter(|p| p.commits.is_some()).collect();
    if with.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\nEmporium's group commit during each run (deltas of its `/metrics` counters over each \
         run, warm-up included, preparation excluded):\n\n\
         | workload | clients | commands | groups | commands per group | ms per synced write | time syncing |\n\
         |---|---|---|---|---|---|---|"
    );
    for p in with {
        let c = p.commits.as_ref().expect("filtered");
        let groups = c.groups.max(1) as f64;
        let variant = if p.variant.is_empty() { String::new() } else { format!(" {}", p.variant) };
        let _ = writeln!(
            md,
            "| {}{variant} | {} | {} | {} | {:.1} | {:.2} | {:.0}% |",
            p.workload,
            p.clients,
            thousands(c.commands as f64),
            thousands(c.groups as f64),
            c.commands as f64 / groups,
            c.sync_seconds * 1000.0 / groups,
            c.sync_seconds / c.elapsed_seconds.max(1e-9) * 100.0
        );
    }
}

/// Replaces the section between the markers in `file` (creating the file, or appending
/// the section, if there is none).
pub fn splice(file: &Path, section: &str) -> anyhow::Result<()> {
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let block = format!("{BEGIN}\n{section}{END}\n");
    let updated = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            let after = &existing[end + END.len()..];
            format!("{}{block}{}", &existing[..begin], after.strip_prefix('\n').unwrap_or(after))
        }
        _ if existing.is_empty() => format!("# Benchmarks\n\n{block}"),
        _ => format!("{}\n\n{block}", existing.trim_end()),
    };
    std::fs::write(file, updated).with_context(|| format!("writing {}", file.display()))
}

const PALETTE: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x8c, 0x56, 0x4b),
];

/// A series: a name and its points.
type Series = (String, Vec<(f64, f64)>);

/// `(workload, variant)` pairs drawn on the same charts.
type Members = &'static [(&'static str, &'static str)];

/// The charts: file name, title, and what they show.
const CHART_GROUPS: &[(&str, &str, Members)] = &[
    (
        "product-get",
        "Product GET / add-to-cart / nginx static",
        &[("product-get", ""), ("add-to-cart", "")],
    ),
    ("flash-sale", "Flash sale: purchases by signed-in buyers", &[("flash-sale", "rate")]),
    (
        "checkout-heavy",
        "Checkout-heavy: checkout+payment pairs",
        &[("checkout-heavy", "uniform"), ("checkout-heavy", "hot")],
    ),
];

/// Draws the charts into `dir`; answers `(title, file name)` for each.
pub fn charts(points: &[Point], dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for &(name, title, members) in CHART_GROUPS {
        let mut sweep: Vec<Series> = Vec::new();
        let mut cdf: Vec<Series> = Vec::new();
        for (workload, variant) in members {
            for system in ["emporium", "nginx", "redis", "postgres"] {
                let selected = select(points, system, workload, variant);
                if selected.is_empty() {
                    continue;
                }
                let label = match (members.len(), *variant) {
                    (1, _) | (_, "") => format!("{system} {workload}"),
                    _ => format!("{system} {variant}"),
                };
                let label = label.replace(" product-get", "").replace(" flash-sale", "");
                sweep.push((
                    label.clone(),
                    selected.iter().map(|p| (p.clients as f64, p.throughput.max(1.0))).collect(),
                ));
                if let Some(top) = best(&selected) {
                    let curve = top
                        .latency
                        .cdf
                        .iter()
                        .map(|&(q, v)| (v.max(1) as f64, q * 100.0))
                        .collect();
                    cdf.push((format!("{label} ({} clients)", top.clients), curve));
                }
            }
        }
        if sweep.is_empty() {
            continue;
        }
        let path = dir.join(format!("{name}-throughput.svg"));
        throughput_chart(&path, &format!("{title}: throughput against concurrency"), &sweep)?;
        out.push((format!("{title}: throughput against concurrency"), path));
        let path = dir.join(format!("{name}-latency-cdf.svg"));
        cdf_chart(&path, &format!("{title}: latency CDF at each system's best concurrency"), &cdf)?;
        out.push((format!("{title}: latency CDF"), path));
    }
    Ok(out)
}

fn bounds(series: &[Series], axis: impl Fn(&(f64, f64)) -> f64) -> (f64, f64) {
    let values = series.iter().flat_map(|(_, s)| s.iter().map(&axis));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    (lo.max(1e-3), hi.max(lo * 2.0))
}

fn throughput_chart(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let (x_lo, x_hi) = bounds(series, |p| p.0);
    let (y_lo, y_hi) = bounds(series, |p| p.1);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x_lo * 0.8..x_hi * 1.25).log_scale(),
            (y_lo * 0.5..y_hi * 2.0).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("concurrent clients (log)")
        .y_desc("per second (log)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| thousands(*y))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

fn cdf_chart(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    let (x_lo, x_hi) = bounds(series, |p| p.0);
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((x_lo * 0.8..x_hi * 1.25).log_scale(), 0f64..100f64)?;
    chart
        .configure_mesh()
        .x_desc("latency (µs, log)")
        .y_desc("percentile")
        .x_label_formatter(&|x| thousands(*x))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.9))
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(ratio_text(0.734), "0.73×");
        assert_eq!(ratio_text(23.4), "23×");
    }

    #[test]
    fn the_section_replaces_only_what_is_between_the_markers() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("BENCHMARKS.md");
        std::fs::write(&file, "# B\n\ncriterion figures\n").unwrap();
        splice(&file, "first\n").unwrap();
        splice(&file, "second\n").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("# B\n\ncriterion figures\n\n{BEGIN}\nsecond\n{END}\n"));
        std::fs::write(&file, format!("top\n{BEGIN}\nold\n{END}\nbottom\n")).unwrap();
        splice(&file, "new\n").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text, format!("top\n{BEGIN}\nnew\n{END}\nbottom\n"));
    }
}
