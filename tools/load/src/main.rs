//! cellos-load: drives a running cellos-server from its own process and reports what it saw.
//!
//! - `ws`: opens N WebSocket subscribers, ingests events at a fixed rate, and reports delivered
//!   frames/s, publish-to-deliver latency (p50/p99/max), errors and the server's RSS per socket.
//! - `admit`: C concurrent clients POST formations; reports admissions/s and latency.
//! - `publish`: publishes cell events straight into JetStream (as supervisors do).
//! - `wait`: waits until a server's projection cursor reaches a seq (replay and catch-up timing).
//! - `fill`: writes cell events straight into an embedded log directory (no server running), to
//!   make large logs for the boot benchmarks.
//!
//! Everything is bounded by `--duration` or `--count`; the tool stops by itself.

mod fill;
mod hist;
mod nats;
mod net;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use fastwebsockets::OpCode;
use tokio::sync::{watch, Semaphore};

use hist::Hist;

#[derive(Parser)]
#[command(
    name = "cellos-load",
    about = "Load generator for cellos-server (loopback only)"
)]
struct Args {
    /// Server address (host:port). Use a loopback address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Bearer token.
    #[arg(long, env = "CELLOS_SERVER_API_TOKEN")]
    token: String,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// WebSocket fan-out: subscribers, a paced producer, latency and memory.
    Ws {
        #[arg(long, default_value_t = 1000)]
        sockets: usize,
        /// Events ingested per second (every socket receives all of them).
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Events per POST.
        #[arg(long, default_value_t = 1)]
        batch: u64,
        /// Seconds of paced ingestion.
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Padding bytes per event.
        #[arg(long, default_value_t = 200)]
        pad: usize,
        /// Server pid, to read its RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 128)]
        connect_parallelism: usize,
        /// Publish the events into JetStream at this NATS URL instead of POSTing them (for
        /// servers without `POST /v1/events`); each batch waits for its acks.
        #[arg(long)]
        nats: Option<String>,
    },
    /// Publish cell events into the `CELLOS_EVENTS` stream (created if missing).
    Publish {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Events per second in total; 0 publishes as fast as the acks come back.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Parallel publishing connections (each owns a share of the cells).
        #[arg(long, default_value_t = 4)]
        publishers: u64,
        /// Events per cell (1..=8): started, command completions, destroyed.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=8))]
        events_per_cell: u64,
    },
    /// Wait until `GET /v1/formations` reports a cursor of at least `--cursor`; prints the time.
    Wait {
        #[arg(long)]
        cursor: u64,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Write `--cells` cells × `--events-per-cell` events into an embedded log directory (no
    /// server may be running on it): a `started` per cell, then `command.completed` ones.
    Fill {
        #[arg(long)]
        data_dir: std::path::PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        cells: u64,
        #[arg(long, default_value_t = 1)]
        events_per_cell: u64,
    },
    /// Formation admissions from concurrent clients.
    Admit {
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Total admissions.
        #[arg(long, default_value_t = 2000)]
        count: u64,
    },
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The `sentAt` microseconds a load event carries, found without parsing the whole frame.
fn sent_at(frame: &[u8]) -> Option<u64> {
    let key = b"\"sentAt\":";
    let at = frame.windows(key.len()).position(|w| w == key)? + key.len();
    number_at(frame, at)
}

/// The unsigned integer written at `bytes[at..]`.
fn number_at(bytes: &[u8], at: usize) -> Option<u64> {
    let digits = bytes.get(at..)?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..len]).ok()?.parse().ok()
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    match args.mode {
        Mode::Ws {
            sockets,
            rate,
            batch,
            duration,
            pad,
            server_pid,
            connect_parallelism,
            nats,
        } => {
            ws(
                &args.addr,
                &args.token,
                sockets,
                rate,
                batch,
                duration,
                pad,
                server_pid,
                connect_parallelism,
                nats.as_deref(),
            )
            .await
        }
        Mode::Admit { clients, count } => admit(&args.addr, &args.token, clients, count).await,
        Mode::Fill {
            data_dir,
            cells,
            events_per_cell,
        } => fill::fill(&data_dir, cells, events_per_cell).await,
        Mode::Publish {
            nats,
            count,
            rate,
            publishers,
            events_per_cell,
        } => nats::publish(&nats, count, events_per_cell, rate, publishers)
            .await
            .map(|_| ()),
        Mode::Wait {
            cursor,
            timeout_secs,
        } => {
            let secs = nats::wait_for_cursor(
                &args.addr,
                &args.token,
                cursor,
                Duration::from_secs(timeout_secs),
            )
            .await?;
            println!("cursor {cursor} reached after {secs:.3} s");
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn ws(
    addr: &str,
    token: &str,
    sockets: usize,
    rate: u64,
    batch: u64,
    duration: u64,
    pad: usize,
    server_pid: Option<u32>,
    parallelism: usize,
    nats_url: Option<&str>,
) -> Result<()> {
    let rss_before = server_pid.and_then(rss_kib);
    let (stop_tx, stop_rx) = watch::channel(false);
    let errors = Arc::new(AtomicU64::new(0));
    let connected = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(parallelism));
    let started = Instant::now();
    let mut readers = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let (addr, token) = (addr.to_owned(), token.to_owned());
        let (gate, errors, connected) = (gate.clone(), errors.clone(), connected.clone());
        let mut stop = stop_rx.clone();
        readers.push(tokio::spawn(async move {
            let mut hist = Hist::default();
            let mut frames = 0u64;
            let permit = gate.acquire_owned().await;
            let ws = net::websocket(&addr, &token, "").await;
            drop(permit);
            let mut ws = match ws {
                Ok(ws) => ws,
                Err(e) => {
                    if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("connect failed: {e:#}");
                    }
                    return (hist, frames);
                }
            };
            connected.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    frame = ws.read_frame() => match frame {
                        Ok(f) if f.opcode == OpCode::Text => {
                            frames += 1;
                            if let Some(at) = sent_at(&f.payload) {
                                hist.record(now_us().saturating_sub(at));
                            }
                        }
                        Ok(f) if f.opcode == OpCode::Close => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            (hist, frames)
        }));
    }
    while connected.load(Ordering::Relaxed) + errors.load(Ordering::Relaxed) < sockets as u64 {
        if started.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("sockets did not connect within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = server_pid.and_then(rss_kib);

    // Paced producer: one POST of `batch` events every batch/rate seconds.
    let mut http = net::Http::connect(addr, token).await?;
    let js = match nats_url {
        Some(url) => Some(nats::connect(url).await?),
        None => None,
    };
    let padding = "x".repeat(pad);
    let period = Duration::from_secs_f64(batch as f64 / rate as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let deadline = Instant::now() + Duration::from_secs(duration);
    let mut sent = 0u64;
    let mut post = Hist::default();
    let produce_start = Instant::now();
    while Instant::now() < deadline {
        tick.tick().await;
        let at = now_us();
        let events: Vec<String> = (0..batch)
            .map(|i| {
                format!(
                    r#"{{"specversion":"1.0","id":"load-{at}-{i}","source":"cellos-load","type":"dev.cellos.load.v1.tick","data":{{"sentAt":{at},"pad":"{padding}"}}}}"#
                )
            })
            .collect();
        let t = Instant::now();
        if let Some(js) = &js {
            let mut acks = Vec::with_capacity(events.len());
            for e in events {
                acks.push(
                    js.publish("cellos.events.other.load.tick", e.into())
                        .await?,
                );
            }
            for ack in acks {
                ack.await.context("publish ack")?;
            }
        } else {
            let body = format!("[{}]", events.join(","));
            let (status, answer) = http
                .request(
                    "POST",
                    "/v1/events",
                    "application/cloudevents-batch+json",
                    body.as_bytes(),
                )
                .await
                .context("ingest request")?;
            if status != 202 {
                anyhow::bail!(
                    "ingest answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
        }
        post.record(t.elapsed().as_micros() as u64);
        sent += batch;
    }
    let produce_secs = produce_start.elapsed().as_secs_f64();
    let rss_busy = server_pid.and_then(rss_kib);
    // Let the last frames arrive, then stop the readers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_tx.send(true);
    let mut hist = Hist::default();
    let mut frames = 0u64;
    for r in readers {
        let (h, f) = r.await?;
        hist.merge(&h);
        frames += f;
    }
    let n = connected.load(Ordering::Relaxed);
    let per_conn = |after: Option<u64>| match (rss_before, after) {
        (Some(b), Some(a)) if n > 0 => format!("{:.1}", a.saturating_sub(b) as f64 / n as f64),
        _ => "n/a".into(),
    };
    println!("sockets connected   {n} of {sockets} in {connect_secs:.1} s");
    println!(
        "errors (connect/close/read)  {}",
        errors.load(Ordering::Relaxed)
    );
    println!(
        "events ingested     {sent} at {:.0}/s (ingest call p50 {} us, p99 {} us)",
        sent as f64 / produce_secs,
        post.quantile(0.5),
        post.quantile(0.99)
    );
    println!(
        "frames delivered    {frames} of {} expected ({:.0} frames/s)",
        sent * n,
        frames as f64 / produce_secs
    );
    println!(
        "latency publish→deliver  p50 {} us  p99 {} us  max {} us",
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.max
    );
    println!(
        "server RSS KiB      before {:?}  idle {:?}  busy {:?}",
        rss_before, rss_idle, rss_busy
    );
    println!(
        "server RSS per socket KiB  idle {}  busy {}",
        per_conn(rss_idle),
        per_conn(rss_busy)
    );
    Ok(())
}

async fn admit(addr: &str, token: &str, clients: usize, count: u64) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let run = now_us();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (addr, token, next) = (addr.to_owned(), token.to_owned(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut http = net::Http::connect(&addr, &token).await?;
            let mut hist = Hist::default();
            let mut refused = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let body = format!(
                    r#"{{"name":"load-{run}-{i}","coordinator":"c","members":[{{"id":"c"}},{{"id":"w1","authorizedBy":"c"}},{{"id":"w2","authorizedBy":"w1"}}]}}"#
                );
                let t = Instant::now();
                let (status, _) = http.request("POST", "/v1/formations", "application/json", body.as_bytes()).await?;
                hist.record(t.elapsed().as_micros() as u64);
                if status != 201 {
                    refused += 1;
                }
            }
            anyhow::Ok((hist, refused))
        }));
    }
    let mut hist = Hist::default();
    let mut refused = 0;
    for t in tasks {
        let (h, r) = t.await??;
        hist.merge(&h);
        refused += r;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "admissions          {} by {clients} clients in {secs:.2} s: {:.0}/s",
        hist.n,
        hist.n as f64 / secs
    );
    println!("not 201             {refused}");
    println!(
        "latency             p50 {} us  p99 {} us  max {} us",
        hist.quantile(0.5),
        hist.quantile(0.99),
        hist.max
    );
    Ok(())
}
