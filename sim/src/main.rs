//! `chronik-sim`: run one seed of the deterministic simulation.
//! Built with `RUSTFLAGS="--cfg madsim"`; `ci/sim.sh` is the way in.

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    sim_main::main()
}

#[cfg(not(madsim))]
fn main() -> std::process::ExitCode {
    eprintln!("chronik-sim must be built with RUSTFLAGS=\"--cfg madsim\"; run it through ci/sim.sh");
    std::process::ExitCode::from(2)
}

#[cfg(madsim)]
mod sim_main {
    use std::process::ExitCode;
    use std::time::{Duration, Instant};

    use chronik_sim::world::{run_seed, Options, Outcome};
    use clap::Parser;

    #[derive(Parser)]
    #[command(name = "chronik-sim", about = "Run one seed of Chronik's deterministic simulation")]
    struct Args {
        /// The seed: it decides every fault, delay and choice of the run
        #[arg(long)]
        seed: u64,
        /// Switch on a planted bug (needs a build with --cfg chronik_planted_bugs)
        #[arg(long)]
        bug: Option<String>,
        /// Run the seed twice and fail unless both runs have the same trace
        #[arg(long)]
        check_determinism: bool,
        /// Simulated seconds of the fault phase
        #[arg(long, default_value_t = 20)]
        safety_secs: u64,
        /// Simulated seconds allowed for convergence after healing
        #[arg(long, default_value_t = 30)]
        liveness_secs: u64,
        /// Print the whole history
        #[arg(long)]
        verbose: bool,
        /// Which world: `broker` (one broker, clients, disk and network faults) or
        /// `cluster` (the controller quorum of 3-5 nodes under crashes and partitions)
        #[arg(long, default_value = "broker")]
        world: String,
    }

    pub fn main() -> ExitCode {
        let args = Args::parse();
        if std::env::var_os("RUST_LOG").is_some() {
            tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
        }
        if let Some(name) = &args.bug {
            let Some(bug) = chronik_core::planted::Bug::from_name(name) else {
                eprintln!("unknown bug '{name}'; known: {:?}", chronik_core::planted::Bug::ALL.map(|b| b.name()));
                return ExitCode::from(2);
            };
            #[cfg(chronik_planted_bugs)]
            chronik_core::planted::plant(Some(bug));
            #[cfg(not(chronik_planted_bugs))]
            {
                eprintln!("--bug {} needs a build with --cfg chronik_planted_bugs (ci/sim.sh --bug does that)", bug.name());
                return ExitCode::from(2);
            }
        }
        let opts = Options { seed: args.seed, safety: Duration::from_secs(args.safety_secs), liveness: Duration::from_secs(args.liveness_secs) };
        let wall = Instant::now();
        if !matches!(args.world.as_str(), "broker" | "cluster") {
            eprintln!("unknown world '{}'; use broker or cluster", args.world);
            return ExitCode::from(2);
        }
        let cluster = args.world == "cluster";
        let outcome = run(&opts, cluster);
        let wall = wall.elapsed();
        if args.verbose {
            for e in &outcome.history.events {
                println!("  {e:?}");
            }
        }
        let hash = outcome.history.trace_hash();
        if args.check_determinism {
            // The second run in a fresh process: some process-wide state
            // (tokio's select! RNG seeds, used unbiased inside openraft) would
            // otherwise differ between two runs in one process, while a
            // replay always starts a fresh process.
            let again = match rerun_trace(&args) {
                Ok(h) => h,
                Err(e) => {
                    println!("seed {}: cannot rerun for the determinism check: {e}", args.seed);
                    return ExitCode::FAILURE;
                }
            };
            if hash != again {
                println!("seed {}: NONDETERMINISTIC trace {hash:016x} then {again:016x}", args.seed);
                return ExitCode::FAILURE;
            }
        }
        let acked = outcome.history.acked().len();
        let indexed: usize = outcome.history.search_index.values().map(|(_, docs)| docs.len()).sum();
        let faults: Vec<String> = outcome.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let verdict = if outcome.violations.is_empty() { "ok" } else { "FAILED" };
        println!(
            "seed {}{}: {verdict} trace={hash:016x} acked={acked} indexed={indexed} faults[{}] sim={:.1}s wall={:.2}s ({:.0} sim-s/wall-s)",
            args.seed,
            if cluster { " (cluster)" } else { "" },
            faults.join(" "),
            outcome.sim_elapsed.as_secs_f64(),
            wall.as_secs_f64(),
            outcome.sim_elapsed.as_secs_f64() / wall.as_secs_f64().max(1e-6),
        );
        for (checker, v) in outcome.violations.iter().take(20) {
            println!("  [{checker}] {v}");
        }
        if outcome.violations.is_empty() {
            ExitCode::SUCCESS
        } else {
            let bug = args.bug.map(|b| format!(" --bug {b}")).unwrap_or_default();
            let world = if cluster { " -- --world cluster" } else { "" };
            println!("  replay: ci/sim.sh --seed {}{bug}{world}", args.seed);
            ExitCode::FAILURE
        }
    }

    /// Runs this seed again in a child process and returns its trace hash.
    fn rerun_trace(args: &Args) -> Result<u64, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["--seed", &args.seed.to_string(), "--world", &args.world]);
        cmd.args(["--safety-secs", &args.safety_secs.to_string(), "--liveness-secs", &args.liveness_secs.to_string()]);
        if let Some(bug) = &args.bug {
            cmd.args(["--bug", bug]);
        }
        let out = cmd.output().map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        let hash = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("trace="))
            .ok_or_else(|| format!("no trace in its output: {}", text.lines().last().unwrap_or("")))?;
        u64::from_str_radix(hash, 16).map_err(|e| e.to_string())
    }

    /// Each run on a fresh thread, so no thread-local state leaks between runs.
    fn run(opts: &Options, cluster: bool) -> Outcome {
        let opts = opts.clone();
        std::thread::spawn(move || if cluster { chronik_sim::cluster::run_seed(&opts) } else { run_seed(&opts) })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }
}
