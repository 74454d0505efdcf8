//! The Markdown report: machine, per-mailbox tables, limits, target check, growth table.

use crate::scenario::{Cell, Config, MailboxResult, Results, Scn, State};
use crate::server::Format;
use crate::Opts;
use std::fmt::Write;
use std::process::Command;
use std::time::Duration;

/// RSS budget of the target: this much per message plus a fixed part.
const RSS_PER_MESSAGE: u64 = 64;
const RSS_FIXED: u64 = 8 << 20;

pub fn dur(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        format!("{s:.1} s")
    } else if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.2} ms", s * 1e3)
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|k| k.parse::<u64>().ok())
                })
        })
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1048576.0))
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let dovecot = {
        let v = sh("dovecot", &["--version"]);
        if v == "unknown" {
            sh("/usr/sbin/dovecot", &["--version"])
        } else {
            v
        }
    };
    format!(
        "- CPU: {model}, nproc {nproc}\n- RAM: {mem}\n- kernel: {kernel}\n- Dovecot: {dovecot}\n- date: {}\n",
        sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    )
}

fn ratio(ps: &Cell, dc: &Cell) -> f64 {
    dc.wall.as_secs_f64() / ps.wall.as_secs_f64()
}

fn time_cell(c: &Cell) -> String {
    if c.valid() {
        dur(c.wall)
    } else {
        format!("**INVALID** ({})", dur(c.wall))
    }
}

fn mailbox_table(out: &mut String, m: &MailboxResult) {
    let _ = writeln!(
        out,
        "### {} — {} messages{}\n",
        m.format.name(),
        m.count,
        if m.format == Format::Mbox {
            format!(" ({:.1} MB)", m.mbox_bytes as f64 / 1e6)
        } else {
            String::new()
        }
    );
    out.push_str(
        "| Scenario | Session | pop-serve | pop-serve RSS | Dovecot | Dovecot RSS | Dovecot/pop-serve | RETR MB/s (pop-serve / Dovecot) |\n\
         |---|---|--:|--:|--:|--:|--:|--:|\n",
    );
    for r in &m.rows {
        let (dt, drss, rat) = match &r.dc {
            Some(d) => (time_cell(d), mib(d.rss), format!("{:.1}x", ratio(&r.ps, d))),
            None => ("—".into(), "—".into(), "—".into()),
        };
        let mbps = if r.scn == Scn::RetrAll && r.ps.bytes > 0 {
            match &r.dc {
                Some(d) => format!("{:.0} / {:.0}", r.ps.mbps(), d.mbps()),
                None => format!("{:.0}", r.ps.mbps()),
            }
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scn.name(),
            r.state.name(),
            time_cell(&r.ps),
            mib(r.ps.rss),
            dt,
            drss,
            rat,
            mbps
        );
    }
    out.push('\n');
    for r in &m.rows {
        for (who, c) in [("pop-serve", Some(&r.ps)), ("Dovecot", r.dc.as_ref())] {
            if let Some(c) = c.filter(|c| !c.valid()) {
                let _ = writeln!(
                    out,
                    "- **INVALID** {who} {} ({}): {}",
                    r.scn.name(),
                    r.state.name(),
                    c.problems.join("; ")
                );
            }
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "MISSED"
    }
}

fn targets(out: &mut String, res: &Results) {
    out.push_str("## Target check\n\nReported, never asserted. Evaluated on the largest mailbox of each format.\n\n");
    let largest = |f: Format| {
        res.mailboxes
            .iter()
            .filter(|m| m.format == f)
            .max_by_key(|m| m.count)
    };
    let row = |m: &'_ MailboxResult, s: Scn, st: State| {
        m.rows
            .iter()
            .find(|r| r.scn == s && r.state == st)
            .map(|r| (r.ps.clone(), r.dc.clone()))
    };
    let meta = [Scn::Stat, Scn::List, Scn::Uidl];
    if let (Some(m), Some(l)) = (largest(Format::Mbox), &res.limits) {
        let _ = writeln!(
            out,
            "**First session (no index) STAT/LIST/UIDL within 1.5x of the separator scan** ({} for {} messages):\n",
            dur(l.grep),
            m.count
        );
        for s in meta {
            if let Some((ps, _)) = row(m, s, State::Cold) {
                let x = ps.wall.as_secs_f64() / l.grep.as_secs_f64();
                let _ = writeln!(
                    out,
                    "- {} {}: {} = {:.2}x the scan",
                    verdict(x <= 1.5 && ps.valid()),
                    s.name(),
                    dur(ps.wall),
                    x
                );
            }
        }
        out.push('\n');
    }
    if let Some(m) = largest(Format::Mbox) {
        if m.rows.iter().any(|r| r.dc.is_some()) {
            out.push_str(
                "**Later session STAT/LIST/UIDL ≥ 5x faster than Dovecot with index** (mbox):\n\n",
            );
            for s in meta {
                if let Some((ps, Some(dc))) = row(m, s, State::Warm) {
                    let x = ratio(&ps, &dc);
                    let _ = writeln!(
                        out,
                        "- {} {}: pop-serve {} vs Dovecot {} = {:.2}x",
                        verdict(x >= 5.0 && ps.valid()),
                        s.name(),
                        dur(ps.wall),
                        dur(dc.wall),
                        x
                    );
                }
            }
            out.push('\n');
        }
        out.push_str("**RETR-all ≥ 50% of the pipe and ≥ 8x Dovecot** (mbox):\n\n");
        for st in [State::Cold, State::Warm] {
            if let Some((ps, dc)) = row(m, Scn::RetrAll, st) {
                if let Some(l) = &res.limits {
                    let f = ps.mbps() / l.pipe_mbps();
                    let _ = writeln!(
                        out,
                        "- {} {} session: {:.0} MB/s = {:.0}% of the pipe's {:.0} MB/s",
                        verdict(f >= 0.5 && ps.valid()),
                        st.name(),
                        ps.mbps(),
                        f * 100.0,
                        l.pipe_mbps()
                    );
                }
                if let Some(dc) = dc {
                    let x = ratio(&ps, &dc);
                    let _ = writeln!(
                        out,
                        "- {} {} session: {:.1}x Dovecot ({:.0} MB/s)",
                        verdict(x >= 8.0 && ps.valid()),
                        st.name(),
                        x,
                        dc.mbps()
                    );
                }
            }
        }
        out.push('\n');
    }
    let dele: Vec<&MailboxResult> = [Format::Mbox, Format::Maildir]
        .into_iter()
        .filter_map(largest)
        .filter(|m| m.rows.iter().any(|r| r.dc.is_some()))
        .collect();
    if !dele.is_empty() {
        out.push_str("**DELE-half+QUIT ≥ 4x faster than Dovecot with index:**\n\n");
        for m in dele {
            if let Some((ps, Some(dc))) = row(m, Scn::DeleHalf, State::Warm) {
                let x = ratio(&ps, &dc);
                let _ = writeln!(
                    out,
                    "- {} {}: pop-serve {} vs Dovecot {} = {:.2}x",
                    verdict(x >= 4.0 && ps.valid()),
                    m.format.name(),
                    dur(ps.wall),
                    dur(dc.wall),
                    x
                );
            }
        }
        out.push('\n');
    }
    out.push_str("**Peak RSS ≤ 64 bytes/message + 8 MiB, and below Dovecot's, in every row:**\n\n");
    let mut budget_miss = Vec::new();
    let mut dovecot_miss = Vec::new();
    let mut rows = 0;
    for m in &res.mailboxes {
        let n = m.count as u64 + crate::scenario::NEW_MAIL;
        for r in &m.rows {
            rows += 1;
            let budget = RSS_PER_MESSAGE * n + RSS_FIXED;
            let what = format!(
                "{} {} {} ({})",
                m.format.name(),
                m.count,
                r.scn.name(),
                r.state.name()
            );
            if r.ps.rss > budget {
                budget_miss.push(format!("{what}: {} > {}", mib(r.ps.rss), mib(budget)));
            }
            if let Some(dc) = &r.dc {
                if r.ps.rss >= dc.rss {
                    dovecot_miss.push(format!(
                        "{what}: {} vs Dovecot {}",
                        mib(r.ps.rss),
                        mib(dc.rss)
                    ));
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "- {} budget: {} of {rows} rows over{}",
        verdict(budget_miss.is_empty()),
        budget_miss.len(),
        if budget_miss.is_empty() {
            String::new()
        } else {
            format!(": {}", budget_miss.join("; "))
        }
    );
    if res
        .mailboxes
        .iter()
        .any(|m| m.rows.iter().any(|r| r.dc.is_some()))
    {
        let _ = writeln!(
            out,
            "- {} below Dovecot: {} of {rows} rows not below{}",
            verdict(dovecot_miss.is_empty()),
            dovecot_miss.len(),
            if dovecot_miss.is_empty() {
                String::new()
            } else {
                format!(": {}", dovecot_miss.join("; "))
            }
        );
    }
    let _ = writeln!(
        out,
        "- (every RSS figure includes a floor of {} that Linux reports even for `/bin/true` spawned the same way)\n",
        mib(res.rss_floor)
    );
    if let Some(m) = largest(Format::Maildir).filter(|m| m.rows.iter().any(|r| r.dc.is_some())) {
        let _ = writeln!(
            out,
            "**Maildir ≥ 3x faster than Dovecot cold and no slower warm** ({} messages):\n",
            m.count
        );
        let mut cold = Vec::new();
        let mut warm = Vec::new();
        for r in &m.rows {
            if let Some(dc) = &r.dc {
                let x = ratio(&r.ps, dc);
                let s = format!("{} ({}) {:.2}x", r.scn.name(), r.state.name(), x);
                if r.state == State::Cold {
                    cold.push((x >= 3.0 && r.ps.valid(), s));
                } else {
                    warm.push((x >= 1.0 && r.ps.valid(), s));
                }
            }
        }
        for (name, v) in [
            ("cold (first session)", cold),
            ("warm (later / new mail)", warm),
        ] {
            let ok = v.iter().all(|(ok, _)| *ok);
            let missed: Vec<String> = v
                .iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, s)| s.clone())
                .collect();
            let _ = writeln!(
                out,
                "- {} {name}: {}",
                verdict(ok),
                if ok {
                    v.iter()
                        .map(|(_, s)| s.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    format!("missed by {}", missed.join(", "))
                }
            );
        }
        out.push('\n');
    }
}

fn growth(out: &mut String, res: &Results) {
    if res.growth.is_empty() {
        return;
    }
    let dovecot = res.growth.iter().any(|g| g.dc_cold.is_some());
    out.push_str("## Growth (mbox of ~500-byte messages, STAT session)\n\n");
    out.push_str("| Messages | mbox MB | cold STAT | µs/msg | later STAT | µs/msg | peak RSS | RSS bytes/msg |");
    if dovecot {
        out.push_str(" Dovecot cold | Dovecot later | Dovecot RSS |");
    }
    out.push_str("\n|--:|--:|--:|--:|--:|--:|--:|--:|");
    if dovecot {
        out.push_str("--:|--:|--:|");
    }
    out.push('\n');
    for g in &res.growth {
        let n = g.count.max(1) as f64;
        let rss = g.ps_cold.rss.max(g.ps_warm.rss);
        let _ = write!(
            out,
            "| {} | {:.1} | {} | {:.2} | {} | {:.2} | {} | {:.0} |",
            g.count,
            g.mbox_bytes as f64 / 1e6,
            time_cell(&g.ps_cold),
            g.ps_cold.wall.as_secs_f64() * 1e6 / n,
            time_cell(&g.ps_warm),
            g.ps_warm.wall.as_secs_f64() * 1e6 / n,
            mib(rss),
            rss as f64 / n
        );
        if let (Some(c), Some(w)) = (&g.dc_cold, &g.dc_warm) {
            let _ = write!(
                out,
                " {} | {} | {} |",
                time_cell(c),
                time_cell(w),
                mib(c.rss.max(w.rss))
            );
        }
        out.push('\n');
    }
    out.push('\n');
}

pub fn render(cfg: &Config, opts: &Opts, res: &Results, dovecot_note: Option<&str>) -> String {
    let mut out = String::new();
    out.push_str("# popspool benchmarks\n\n");
    out.push_str(
        "Produced by `scripts/bench` (popspool-bench). Every figure is one whole server process on a \
         pipe pair, preauthenticated: wall time from fork to reaping (start-up and QUIT's update \
         included), peak RSS from `wait4`'s `ru_maxrss`. Times are medians over the repetitions, RSS the \
         highest. pop-serve and Dovecot alternate per repetition on fresh copies of the same \
         generated files; a figure counts only after its payload was validated.\n\n",
    );
    let _ = writeln!(out, "## Machine\n\n{}", machine());
    let _ = writeln!(
        out,
        "- servers run as: {} (uid {}){}\n- repetitions: {}\n- load average before / after: {} / {}\n- whole run: {}",
        cfg.env.user,
        cfg.env.uid,
        if cfg.env.drop_to.is_some() { ", switched from root in the bench" } else { "" },
        cfg.reps,
        res.load_before,
        res.load_after,
        dur(res.elapsed)
    );
    if let Some(n) = &opts.note {
        let _ = writeln!(out, "- note: {n}");
    }
    if let Some(n) = dovecot_note {
        let _ = writeln!(out, "- **{n}**");
    }
    out.push_str(
        "\nSessions: *first* = no index (pop-serve's --state-dir emptied, Dovecot's INDEX dir emptied, \
         fresh copy); *later* = one earlier STAT+QUIT session on the same copy; *new mail* = that, then \
         10 messages delivered before the measured session. RETR-all also sends STAT and LIST (to \
         validate every message against them). DELE rows include QUIT's rewrite/unlinks.\n\n",
    );
    out.push_str(
        "pop-serve's *later* and *new mail* sessions use its index in the state directory \
         (validated at every open); its *first* sessions have none.\n\n",
    );
    out.push_str("## Results\n\n");
    for m in &res.mailboxes {
        mailbox_table(&mut out, m);
    }
    if let Some(l) = &res.limits {
        out.push_str("## The machine's limits (same run, the biggest mbox)\n\n");
        let _ = writeln!(
            out,
            "- pipe (`cat FILE |` a discarding reader): {:.1} MB in {} = **{:.0} MB/s** ({:.2} GB/s)",
            l.file_bytes as f64 / 1e6,
            dur(l.pipe),
            l.pipe_mbps(),
            l.pipe_mbps() / 1e3
        );
        let _ = writeln!(
            out,
            "- separator scan (`grep -c '^From ' FILE`): **{}** (count {})",
            dur(l.grep),
            l.grep_count
                .map(|c| c.to_string())
                .unwrap_or_else(|| "?".into())
        );
        if let Some(m) = res
            .mailboxes
            .iter()
            .filter(|m| m.format == Format::Mbox)
            .max_by_key(|m| m.count)
        {
            for r in m.rows.iter().filter(|r| r.state == State::Cold) {
                let mut s = format!(
                    "- pop-serve {} (first session): {:.2}x the scan",
                    r.scn.name(),
                    r.ps.wall.as_secs_f64() / l.grep.as_secs_f64()
                );
                if r.scn == Scn::RetrAll {
                    let _ = write!(
                        s,
                        ", {:.0}% of the pipe",
                        r.ps.mbps() / l.pipe_mbps() * 100.0
                    );
                }
                let _ = writeln!(out, "{s}");
            }
        }
        out.push('\n');
    }
    targets(&mut out, res);
    growth(&mut out, res);
    let _ = writeln!(
        out,
        "Work dir: generated data is reused when its parameters match (generator v{}).",
        crate::gen::GENERATOR_VERSION
    );
    out
}

/// Replaces the section of `text` that starts with `section`'s heading line (up to the next
/// "## " heading) with `section`, or appends it: how each bench part keeps its own section of
/// BENCHMARKS.md current without touching the others.
pub fn splice_section(text: &str, section: &str) -> String {
    let heading = match section.find('\n') {
        Some(n) => &section[..=n],
        None => section,
    };
    let start = text
        .match_indices(heading)
        .find(|(i, _)| *i == 0 || text[..*i].ends_with('\n'))
        .map(|(i, _)| i);
    match start {
        Some(s) => {
            let after = &text[s + 3..];
            let end = after
                .match_indices("\n## ")
                .next()
                .map(|(i, _)| s + 3 + i + 1)
                .unwrap_or(text.len());
            format!("{}{}{}", &text[..s], section, &text[end..])
        }
        None => {
            let mut t = text.trim_end().to_string();
            if !t.is_empty() {
                t.push_str("\n\n");
            }
            t.push_str(section);
            t
        }
    }
}
