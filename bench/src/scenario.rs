//! The scenarios, their validation, the machine limits and the growth table.

use crate::client::{Outcome, Reply, Script};
use crate::gen::{self, Corpus, Generated};
use crate::server::{Env, Format, Run, Server};
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Messages delivered between sessions in the "after new mail arrived" rows.
pub const NEW_MAIL: u64 = 10;

pub struct Config {
    pub work: PathBuf,
    pub env: Env,
    pub reps: usize,
    pub dovecot: bool,
    /// Only these scenarios (all when `None`).
    pub scenarios: Option<Vec<Scn>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scn {
    Stat,
    List,
    Uidl,
    RetrAll,
    TopAll,
    DeleHalf,
    DeleAll,
}

impl Scn {
    pub fn name(self) -> &'static str {
        match self {
            Scn::Stat => "STAT",
            Scn::List => "LIST",
            Scn::Uidl => "UIDL",
            Scn::RetrAll => "RETR-all",
            Scn::TopAll => "TOP-all (TOP n 0)",
            Scn::DeleHalf => "DELE-half+QUIT",
            Scn::DeleAll => "DELE-all+QUIT",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No index, fresh copy.
    Cold,
    /// One earlier session (STAT, QUIT) on the same copy.
    Warm,
    /// One earlier session, then `NEW_MAIL` messages delivered.
    NewMail,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Cold => "first",
            State::Warm => "later",
            State::NewMail => "new mail",
        }
    }
}

impl Scn {
    /// The scenario a `--scenarios` word names: its table name, case-insensitive, or the
    /// part before its first space or `+` (`stat`, `retr-all`, `top-all`, `dele-half`).
    pub fn parse(word: &str) -> Option<Scn> {
        let all = [
            Scn::Stat,
            Scn::List,
            Scn::Uidl,
            Scn::RetrAll,
            Scn::TopAll,
            Scn::DeleHalf,
            Scn::DeleAll,
        ];
        all.into_iter().find(|s| {
            let name = s.name();
            let short = name.split([' ', '+']).next().unwrap_or(name);
            word.eq_ignore_ascii_case(name) || word.eq_ignore_ascii_case(short)
        })
    }
}

/// The rows of each mailbox table, in order.
pub const ROWS: &[(Scn, State)] = &[
    (Scn::Stat, State::Cold),
    (Scn::Stat, State::Warm),
    (Scn::Stat, State::NewMail),
    (Scn::List, State::Cold),
    (Scn::List, State::Warm),
    (Scn::Uidl, State::Cold),
    (Scn::Uidl, State::Warm),
    (Scn::Uidl, State::NewMail),
    (Scn::RetrAll, State::Cold),
    (Scn::RetrAll, State::Warm),
    (Scn::TopAll, State::Cold),
    (Scn::TopAll, State::Warm),
    (Scn::DeleHalf, State::Cold),
    (Scn::DeleHalf, State::Warm),
    (Scn::DeleAll, State::Cold),
    (Scn::DeleAll, State::Warm),
];

/// One server's figure for one row: medians over the repetitions.
#[derive(Clone, Debug)]
pub struct Cell {
    pub wall: Duration,
    /// Highest peak RSS over the repetitions (the conservative choice).
    pub rss: u64,
    /// Message bytes transferred (RETR-all), for MB/s.
    pub bytes: u64,
    pub problems: Vec<String>,
}

impl Cell {
    pub fn valid(&self) -> bool {
        self.problems.is_empty()
    }
    pub fn mbps(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
}

pub struct Row {
    pub scn: Scn,
    pub state: State,
    pub ps: Cell,
    pub dc: Option<Cell>,
}

pub struct MailboxResult {
    pub format: Format,
    pub count: usize,
    pub mbox_bytes: u64,
    pub rows: Vec<Row>,
}

pub struct Limits {
    pub file_bytes: u64,
    pub pipe: Duration,
    pub grep: Duration,
    pub grep_count: Option<u64>,
}

impl Limits {
    pub fn pipe_mbps(&self) -> f64 {
        self.file_bytes as f64 / 1e6 / self.pipe.as_secs_f64()
    }
}

pub struct GrowthRow {
    pub count: usize,
    pub mbox_bytes: u64,
    pub ps_cold: Cell,
    pub ps_warm: Cell,
    pub dc_cold: Option<Cell>,
    pub dc_warm: Option<Cell>,
}

pub struct Results {
    pub mailboxes: Vec<MailboxResult>,
    pub limits: Option<Limits>,
    pub growth: Vec<GrowthRow>,
    /// Peak RSS Linux reports for `/bin/true` spawned the same way: the floor of every RSS
    /// figure (the forked child counts the bench's resident pages until it execs).
    pub rss_floor: u64,
    pub elapsed: Duration,
    pub load_before: String,
    pub load_after: String,
}

impl Results {
    /// Removes the run copies (about 2 GB after a full run); kept when a row is invalid, for
    /// the servers' stderr logs.
    pub fn clean_up(&self, cfg: &Config) {
        if !self.any_invalid() {
            let _ = std::fs::remove_dir_all(cfg.work.join("run"));
        }
    }

    pub fn any_invalid(&self) -> bool {
        self.mailboxes.iter().any(|m| {
            m.rows
                .iter()
                .any(|r| !r.ps.valid() || r.dc.as_ref().is_some_and(|c| !c.valid()))
        }) || self.growth.iter().any(|g| {
            !g.ps_cold.valid()
                || !g.ps_warm.valid()
                || g.dc_cold.as_ref().is_some_and(|c| !c.valid())
                || g.dc_warm.as_ref().is_some_and(|c| !c.valid())
        })
    }
}

fn script(scn: Scn, n: usize) -> Script {
    let mut s = Script::default();
    match scn {
        Scn::Stat => s.cmd("STAT", Reply::Stat),
        Scn::List => s.cmd("LIST", Reply::List),
        Scn::Uidl => s.cmd("UIDL", Reply::Uidl),
        Scn::RetrAll => {
            // STAT and LIST ride along so every RETR can be checked against them.
            s.cmd("STAT", Reply::Stat);
            s.cmd("LIST", Reply::List);
            for i in 1..=n {
                s.cmd(&format!("RETR {i}"), Reply::Retr);
            }
        }
        Scn::TopAll => {
            for i in 1..=n {
                s.cmd(&format!("TOP {i} 0"), Reply::Top);
            }
        }
        Scn::DeleHalf => {
            for i in (1..=n).step_by(2) {
                s.cmd(&format!("DELE {i}"), Reply::Line);
            }
        }
        Scn::DeleAll => {
            for i in 1..=n {
                s.cmd(&format!("DELE {i}"), Reply::Line);
            }
        }
    }
    s.cmd("QUIT", Reply::Line);
    s
}

fn deleted(scn: Scn, n: usize) -> usize {
    match scn {
        Scn::DeleHalf => n.div_ceil(2),
        Scn::DeleAll => n,
        _ => 0,
    }
}

/// Checks a session's payload. `expected` (pop-serve only) is the generator's canonical size
/// of each message, which pop-serve must match exactly.
fn validate(scn: Scn, o: &Outcome, n: usize, expected: Option<&[u64]>) -> Vec<String> {
    let mut p: Vec<String> = o.errors.clone();
    if o.exit_status != 0 {
        p.push(format!("exit status {}", o.exit_status));
    }
    let check_stat = |p: &mut Vec<String>| match o.stat {
        Some((c, _)) if c as usize == n => {}
        Some((c, _)) => p.push(format!("STAT count {c}, expected {n}")),
        None => p.push("no STAT reply".into()),
    };
    let check_list = |p: &mut Vec<String>| {
        if o.list.len() != n {
            p.push(format!("LIST has {} entries, expected {n}", o.list.len()));
        }
        if let Some(exp) = expected {
            if let Some(i) = (0..n.min(o.list.len())).find(|&i| o.list[i] != exp[i]) {
                p.push(format!(
                    "LIST size of message {} is {}, generator says {}",
                    i + 1,
                    o.list[i],
                    exp[i]
                ));
            }
        }
    };
    match scn {
        Scn::Stat => {
            check_stat(&mut p);
            if let (Some((_, size)), Some(exp)) = (o.stat, expected) {
                let sum: u64 = exp.iter().sum();
                if size != sum {
                    p.push(format!("STAT size {size}, generator says {sum}"));
                }
            }
        }
        Scn::List => check_list(&mut p),
        Scn::Uidl => {
            if o.uidl_count != n {
                p.push(format!("UIDL has {} entries, expected {n}", o.uidl_count));
            }
            if !o.uidl_unique {
                p.push("UIDL values are not all unique".into());
            }
        }
        Scn::RetrAll => {
            check_stat(&mut p);
            check_list(&mut p);
            if o.retr_sizes.len() != n {
                p.push(format!("{} RETR replies, expected {n}", o.retr_sizes.len()));
            }
            let k = o.retr_sizes.len().min(o.list.len());
            if let Some(i) = (0..k).find(|&i| o.retr_sizes[i] != o.list[i]) {
                p.push(format!(
                    "RETR {} sent {} octets, LIST said {}",
                    i + 1,
                    o.retr_sizes[i],
                    o.list[i]
                ));
            }
            let sum: u64 = o.list.iter().sum();
            if let Some((_, size)) = o.stat {
                if size != sum {
                    p.push(format!("STAT size {size} != sum of LIST {sum}"));
                }
            }
            if let Some(exp) = expected {
                let k = k.min(exp.len());
                if let Some(i) = (0..k).find(|&i| o.retr_sizes[i] != exp[i]) {
                    p.push(format!(
                        "RETR {} sent {} octets, generator says {}",
                        i + 1,
                        o.retr_sizes[i],
                        exp[i]
                    ));
                }
            }
        }
        Scn::TopAll => {
            if o.top_count != n {
                p.push(format!("{} TOP replies, expected {n}", o.top_count));
            }
        }
        Scn::DeleHalf | Scn::DeleAll => {}
    }
    p
}

/// One measured session of one server: fresh copy, the row's preparation, the session.
fn measure_once(
    run: &Run,
    g: &Generated,
    corpus: Corpus,
    scn: Scn,
    state: State,
    post_check: bool,
) -> io::Result<(Outcome, Vec<String>, u64)> {
    run.fresh(&g.mbox, g.maildir.as_deref())?;
    let mut expected = g.expected.clone();
    let mut problems = Vec::new();
    if state != State::Cold {
        let prep = run.session(&script(Scn::Stat, g.count))?;
        let pp = validate(Scn::Stat, &prep, g.count, None);
        problems.extend(pp.into_iter().map(|e| format!("earlier session: {e}")));
    }
    if state == State::NewMail {
        expected.extend(run.deliver(corpus, g.count as u64, NEW_MAIL)?);
    }
    let n = expected.len();
    let exp = (run.server == Server::PopServe).then_some(&expected[..]);
    let o = run.session(&script(scn, n))?;
    problems.extend(validate(scn, &o, n, exp));
    let bytes = o.retr_sizes.iter().sum();
    if post_check && matches!(scn, Scn::DeleHalf | Scn::DeleAll) {
        let after = run.session(&script(Scn::Stat, 0))?;
        let left = n - deleted(scn, n);
        match after.stat {
            Some((c, _)) if c as usize == left => {}
            other => problems.push(format!(
                "after QUIT: STAT says {other:?}, expected {left} messages left"
            )),
        }
    }
    Ok((o, problems, bytes))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn cell(samples: Vec<(Outcome, Vec<String>, u64)>) -> Cell {
    let rss = samples.iter().map(|s| s.0.max_rss).max().unwrap_or(0);
    let bytes = samples.first().map(|s| s.2).unwrap_or(0);
    let mut problems: Vec<String> = samples.iter().flat_map(|s| s.1.clone()).collect();
    problems.dedup();
    Cell {
        wall: median(samples.iter().map(|s| s.0.wall).collect()),
        rss,
        bytes,
        problems,
    }
}

fn fmt_short(d: Duration) -> String {
    crate::report::dur(d)
}

/// Runs one row: both servers, interleaved, `reps` times each.
fn run_row(
    cfg: &Config,
    runs: &[Run],
    g: &Generated,
    corpus: Corpus,
    scn: Scn,
    state: State,
) -> io::Result<Vec<Cell>> {
    let mut samples: Vec<Vec<_>> = runs.iter().map(|_| Vec::new()).collect();
    for rep in 0..cfg.reps {
        for (k, run) in runs.iter().enumerate() {
            let s = measure_once(run, g, corpus, scn, state, rep == 0)?;
            if !s.1.is_empty() {
                eprintln!(
                    "!!!!! INVALID: {} {} {} msgs {} ({}): {}",
                    run.server.name(),
                    run.format.name(),
                    g.count,
                    scn.name(),
                    state.name(),
                    s.1.join("; ")
                );
            }
            samples[k].push(s);
        }
    }
    let cells: Vec<Cell> = samples.into_iter().map(cell).collect();
    eprintln!(
        "  {:<8} {:>7} {:<18} {:<9} {}",
        runs[0].format.name(),
        g.count,
        scn.name(),
        state.name(),
        runs.iter()
            .zip(&cells)
            .map(|(r, c)| format!(
                "{} {} {:.1} MiB{}",
                r.server.name(),
                fmt_short(c.wall),
                c.rss as f64 / 1048576.0,
                if c.valid() { "" } else { " INVALID" }
            ))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    Ok(cells)
}

pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The machine's limits on the big mbox: a plain pipe (`cat FILE` into a discarding reader)
/// and a separator scan (`grep -c '^From '`), medians over the repetitions.
fn limits(cfg: &Config, g: &Generated) -> io::Result<Limits> {
    let mut pipe = Vec::new();
    let mut grep = Vec::new();
    let mut grep_count = None;
    for _ in 0..cfg.reps {
        let t = Instant::now();
        let mut child = Command::new("cat")
            .arg(&g.mbox)
            .stdout(Stdio::piped())
            .spawn()?;
        let mut out = child.stdout.take().expect("piped");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match io::Read::read(&mut out, &mut buf) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        child.wait()?;
        pipe.push(t.elapsed());
        if total != g.mbox_bytes {
            return Err(io::Error::other(format!(
                "cat gave {total} bytes of a {}-byte file",
                g.mbox_bytes
            )));
        }
        let t = Instant::now();
        let o = Command::new("grep")
            .args(["-c", "^From "])
            .arg(&g.mbox)
            .output()?;
        grep.push(t.elapsed());
        grep_count = String::from_utf8_lossy(&o.stdout).trim().parse().ok();
    }
    Ok(Limits {
        file_bytes: g.mbox_bytes,
        pipe: median(pipe),
        grep: median(grep),
        grep_count,
    })
}

fn rss_floor(cfg: &Config) -> io::Result<u64> {
    let dir = cfg.work.join("run");
    std::fs::create_dir_all(&dir)?;
    let launch = crate::client::Launch {
        program: "/bin/true".into(),
        args: vec![],
        env: vec![],
        drop_to: cfg.env.drop_to,
        stderr: std::fs::File::create(dir.join("true.stderr"))?,
    };
    Ok(crate::client::run(&launch, &Script::default())?.max_rss)
}

pub fn run_all(
    cfg: &Config,
    sizes: &[usize],
    formats: &[Format],
    growth: Option<&[usize]>,
    growth_dovecot: bool,
) -> io::Result<Results> {
    let started = Instant::now();
    let load_before = loadavg();
    let owner = cfg.env.drop_to;
    let data = cfg.work.join("data");
    let servers: Vec<Server> = if cfg.dovecot {
        vec![Server::PopServe, Server::Dovecot]
    } else {
        vec![Server::PopServe]
    };
    let want_maildir = formats.contains(&Format::Maildir);
    let mut gens = Vec::new();
    for &n in sizes {
        let t = Instant::now();
        eprintln!("generating {n} messages (reused if already there)...");
        let g = gen::generate(&data, Corpus::Realistic, n, want_maildir, owner)?;
        eprintln!(
            "  {} messages, mbox {:.1} MB, mean {:.0} B/message, {}",
            n,
            g.mbox_bytes as f64 / 1e6,
            g.mbox_bytes as f64 / n.max(1) as f64,
            fmt_short(t.elapsed())
        );
        gens.push(g);
    }
    let rss_floor = rss_floor(cfg)?;
    let limits = match gens.iter().max_by_key(|g| g.count) {
        Some(g) if g.count > 0 => {
            eprintln!(
                "measuring the machine's limits on the {}-message mbox...",
                g.count
            );
            Some(limits(cfg, g)?)
        }
        _ => None,
    };
    let mut mailboxes = Vec::new();
    for &format in formats {
        let runs: Vec<Run> = servers
            .iter()
            .map(|&s| Run::new(&cfg.work, &cfg.env, s, format))
            .collect();
        for g in &gens {
            let mut rows = Vec::new();
            for &(scn, state) in ROWS {
                if cfg
                    .scenarios
                    .as_ref()
                    .is_some_and(|only| !only.contains(&scn))
                {
                    continue;
                }
                let mut cells = run_row(cfg, &runs, g, Corpus::Realistic, scn, state)?;
                let dc = (cells.len() > 1).then(|| cells.remove(1));
                rows.push(Row {
                    scn,
                    state,
                    ps: cells.remove(0),
                    dc,
                });
            }
            mailboxes.push(MailboxResult {
                format,
                count: g.count,
                mbox_bytes: g.mbox_bytes,
                rows,
            });
        }
    }
    let mut growth_rows = Vec::new();
    if let Some(gsizes) = growth {
        let gservers: Vec<Server> = if cfg.dovecot && growth_dovecot {
            servers.clone()
        } else {
            vec![Server::PopServe]
        };
        let runs: Vec<Run> = gservers
            .iter()
            .map(|&s| Run::new(&cfg.work, &cfg.env, s, Format::Mbox))
            .collect();
        for &n in gsizes {
            eprintln!("growth: generating {n} small messages (reused if already there)...");
            let g = gen::generate(&data, Corpus::Small, n, false, owner)?;
            let mut cold = run_row(cfg, &runs, &g, Corpus::Small, Scn::Stat, State::Cold)?;
            let mut warm = run_row(cfg, &runs, &g, Corpus::Small, Scn::Stat, State::Warm)?;
            growth_rows.push(GrowthRow {
                count: n,
                mbox_bytes: g.mbox_bytes,
                dc_cold: (cold.len() > 1).then(|| cold.remove(1)),
                dc_warm: (warm.len() > 1).then(|| warm.remove(1)),
                ps_cold: cold.remove(0),
                ps_warm: warm.remove(0),
            });
        }
    }
    Ok(Results {
        mailboxes,
        limits,
        growth: growth_rows,
        rss_floor,
        elapsed: started.elapsed(),
        load_before,
        load_after: loadavg(),
    })
}
