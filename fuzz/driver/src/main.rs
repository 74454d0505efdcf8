//! `spool-fuzz`: runs the fuzz targets of `spool-fuzz-targets` on stable Rust, without
//! libFuzzer. For each target it loads the seed corpus (`fuzz/corpus/<target>/`), then for a
//! bounded time mutates corpus entries (bit flips, byte inserts and deletes, interesting
//! values, dictionary tokens, splices between entries) and runs the target on each. A panic
//! is a finding: the input is written to the artifacts directory and the driver exits 1.
//!
//! ```text
//! spool-fuzz [--seconds N] [--corpus DIR] [--artifacts DIR] [--seed N] [--once] [TARGET...]
//! spool-fuzz --make-seeds DIR
//! ```
//!
//! One allocation over [`alloc::MAX_ALLOC`] is a finding too: the input is saved as
//! `<artifacts>/<target>/oversize-alloc` and the driver exits 1.
//!
//! `--once` runs every corpus entry once and nothing else. `--make-seeds` writes the seeds
//! that are made by the real code (indexes and journals) into `DIR/<target>/`.

mod alloc;
mod mutate;
mod seeds;

#[global_allocator]
static ALLOC: alloc::Capped = alloc::Capped;

use mutate::{mutate, Rng};
use spool_fuzz_targets::{remove_scratch, Target, TARGETS};
use std::panic;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest input the mutator makes (the seeds are far shorter).
const MAX_INPUT: usize = 16 * 1024;

/// Most entries kept in a target's working pool (the seeds plus inputs the walk reached).
const MAX_POOL: usize = 1024;

struct Options {
    seconds: u64,
    corpus: PathBuf,
    artifacts: PathBuf,
    seed: u64,
    once: bool,
    targets: Vec<&'static Target>,
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: spool-fuzz [--seconds N] [--corpus DIR] [--artifacts DIR] [--seed N] [--once] [TARGET...]\n       spool-fuzz --make-seeds DIR\ntargets: {}",
        TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(" ")
    );
    ExitCode::from(2)
}

fn default_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        seconds: 15,
        corpus: default_dir("corpus"),
        artifacts: default_dir("artifacts"),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
        once: false,
        targets: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |what: &str| args.next().ok_or(format!("{what} needs a value"));
        match a.as_str() {
            "--seconds" => {
                o.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?
            }
            "--seed" => {
                o.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "--corpus" => o.corpus = value("--corpus")?.into(),
            "--artifacts" => o.artifacts = value("--artifacts")?.into(),
            "--once" => o.once = true,
            t if !t.starts_with('-') => o
                .targets
                .push(spool_fuzz_targets::target(t).ok_or(format!("no target named {t}"))?),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().collect();
    }
    Ok(o)
}

/// The entries of `dir`, sorted by name; none when it does not exist.
fn load_corpus(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<_> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect();
    v.sort();
    v
}

/// The message of the last panic (the hook keeps it instead of printing it every time).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Runs `t` on `input`; on a panic, saves the input and returns the error line.
fn exec(t: &Target, input: &[u8], artifacts: &Path) -> Result<(), String> {
    alloc::current(input);
    let r = panic::catch_unwind(|| (t.run)(input));
    alloc::current(&[]);
    match r {
        Ok(()) => Ok(()),
        Err(_) => {
            let msg = LAST_PANIC.lock().map(|m| m.clone()).unwrap_or_default();
            let dir = artifacts.join(t.name);
            let path = dir.join(format!("crash-{:016x}", fnv(input)));
            let saved = std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, input))
                .map(|()| path.display().to_string())
                .unwrap_or_else(|e| format!("(not saved: {e})"));
            Err(format!("{}: panic: {msg}\n  input: {saved}", t.name))
        }
    }
}

fn fuzz(t: &Target, o: &Options, rng: &mut Rng) -> Result<(), String> {
    let dir = o.artifacts.join(t.name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    alloc::save_as(&dir.join("oversize-alloc"));
    let seeds: Vec<Vec<u8>> = load_corpus(&o.corpus.join(t.name))
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let mut pool = if seeds.is_empty() {
        vec![Vec::new()]
    } else {
        seeds.clone()
    };
    for s in &pool {
        exec(t, s, &o.artifacts)?;
    }
    if o.once {
        println!("{:<14} {:>9} corpus entries, all pass", t.name, seeds.len());
        return Ok(());
    }
    let start = Instant::now();
    let limit = Duration::from_secs(o.seconds);
    let (mut execs, mut slowest) = (0u64, Duration::ZERO);
    let mut input = Vec::new();
    while start.elapsed() < limit {
        // Half the time from a seed, so the walk never drifts far from real files.
        let base = if rng.below(2) == 0 && !seeds.is_empty() {
            &seeds[rng.below(seeds.len() as u64) as usize]
        } else {
            &pool[rng.below(pool.len() as u64) as usize]
        };
        input.clear();
        input.extend_from_slice(base);
        mutate(rng, &mut input, &pool, MAX_INPUT);
        let t0 = Instant::now();
        exec(t, &input, &o.artifacts)?;
        slowest = slowest.max(t0.elapsed());
        execs += 1;
        if rng.below(64) == 0 {
            if pool.len() < MAX_POOL {
                pool.push(input.clone());
            } else {
                let k = seeds.len() + rng.below((MAX_POOL - seeds.len()) as u64) as usize;
                pool[k.min(MAX_POOL - 1)] = input.clone();
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{:<14} {:>9} execs in {:>5.1} s ({:>7.0}/s), {} seeds, slowest input {:.1} ms",
        t.name,
        execs,
        secs,
        execs as f64 / secs,
        seeds.len(),
        slowest.as_secs_f64() * 1e3
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--make-seeds") {
        let Some(dir) = args.get(2) else {
            return usage();
        };
        return match seeds::make(Path::new(dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("spool-fuzz: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("spool-fuzz: {e}");
            return usage();
        }
    };
    panic::set_hook(Box::new(|info| {
        if let Ok(mut m) = LAST_PANIC.lock() {
            *m = info.to_string();
        }
    }));
    let mut rng = Rng::new(o.seed);
    println!("spool-fuzz: seed {}", o.seed);
    let mut failed = false;
    for t in &o.targets {
        if let Err(e) = fuzz(t, &o, &mut rng) {
            eprintln!("{e}");
            failed = true;
            break;
        }
    }
    remove_scratch();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
