//! `pacer-bench`: runs the benchmarks, prints the table, writes
//! results.json. `make bench` runs it with the `bench` profile.

use std::path::PathBuf;
use std::process::ExitCode;

use pacer_bench::{Sizes, default_results_path, run, table, write_json};
use pacer_shared::config::{LogFormat, LogLevel, LogOutput, LoggingConfig};

const USAGE: &str = "usage: pacer-bench [--tiny] [--only NAME]... [--out FILE] [--log FILE]
  --tiny       tiny sizes: proves the harness runs, measures nothing worth reading
  --only NAME  run only this benchmark (webhook, burst, webhook_moto, stats, cold_start); repeatable
  --out FILE   where the JSON goes (default: target/bench/results.json in this checkout)
  --log FILE   pacer's own log, JSON at info as in production (default: /dev/null)";

struct Args {
    tiny: bool,
    only: Vec<String>,
    out: PathBuf,
    log: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        tiny: false,
        only: Vec::new(),
        out: default_results_path(),
        log: "/dev/null".into(),
    };
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--tiny" => parsed.tiny = true,
            "--only" => parsed.only.push(value("--only")?),
            "--out" => parsed.out = value("--out")?.into(),
            "--log" => parsed.log = value("--log")?.into(),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let known: Vec<&str> = pacer_bench::benchmarks().iter().map(|b| b.name).collect();
    if let Some(unknown) = parsed.only.iter().find(|o| !known.contains(&o.as_str())) {
        return Err(format!(
            "no benchmark {unknown} (there are: {})",
            known.join(", ")
        ));
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(problem) => {
            if !problem.is_empty() {
                eprintln!("pacer-bench: {problem}");
            }
            eprintln!("{USAGE}");
            return if problem.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    // pacer logs as it does in production (JSON at info), so formatting its
    // log lines is part of what is measured; the lines themselves go aside.
    let logging = LoggingConfig {
        level: LogLevel::Info,
        format: LogFormat::Json,
        output: LogOutput::File(args.log),
        color: false,
    };
    let _guard = match pacer_shared::runtime::init_logging(&logging) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("pacer-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if cfg!(debug_assertions) && !args.tiny {
        eprintln!(
            "pacer-bench: this is a debug build; `make bench` builds the optimised `bench` profile"
        );
    }
    let sizes = if args.tiny {
        Sizes::tiny()
    } else {
        Sizes::full()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let report = match runtime.block_on(run(&sizes, args.tiny, &args.only)) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("pacer-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", table(&report));
    match write_json(&report, &args.out) {
        Ok(()) => {
            println!("\nwritten to {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pacer-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
