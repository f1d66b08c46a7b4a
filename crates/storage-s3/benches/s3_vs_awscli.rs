//! 100 MiB upload and download through `S3Storage` vs `aws s3 cp`, against the same local moto
//! server in the same run. Run with `crates/storage-s3/benches/s3_vs_awscli.sh` (or
//! `cargo bench -p nodetool-storage-s3 --bench s3_vs_awscli`).
//!
//! Env: `NODETOOL_BENCH_S3_MIB` (default 100), `NODETOOL_BENCH_S3_ROUNDS` (default 3; the
//! median is reported).
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nodetool_core::{PutOptions, Storage, StorageKey};
use nodetool_storage_s3::{S3Config, S3Storage};
use nodetool_testkit::s3_server::{self, MOTO_ACCESS_KEY_ID, MOTO_SECRET_ACCESS_KEY};
use tokio::io::AsyncWriteExt;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak resident set of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn aws(endpoint: &str, args: &[&str]) -> Duration {
    let start = Instant::now();
    let status = Command::new("aws")
        .args(["--endpoint-url", endpoint, "--only-show-errors", "s3", "cp"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .status()
        .expect("run aws (pip install awscli)");
    assert!(status.success(), "aws s3 cp {args:?} failed");
    start.elapsed()
}

async fn upload_file(storage: &S3Storage, key: &StorageKey, path: &Path) -> Duration {
    let start = Instant::now();
    let file = tokio::fs::File::open(path).await.unwrap();
    let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
        .map(|r| r.map_err(nodetool_core::Error::from))
        .boxed();
    storage
        .upload(key, body, PutOptions::default())
        .await
        .unwrap();
    start.elapsed()
}

async fn download_file(storage: &S3Storage, key: &StorageKey, path: &Path) -> Duration {
    let start = Instant::now();
    let mut body = storage.download(key, None).await.unwrap().body;
    let mut out = tokio::fs::File::create(path).await.unwrap();
    while let Some(chunk) = body.next().await {
        out.write_all(&chunk.unwrap()).await.unwrap();
    }
    out.flush().await.unwrap();
    start.elapsed()
}

fn main() {
    let mib = env_usize("NODETOOL_BENCH_S3_MIB", 100);
    let rounds = env_usize("NODETOOL_BENCH_S3_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let Some(server) = s3_server::start().await else {
            eprintln!("s3_vs_awscli: moto_server not found (pip install 'moto[server]'); nothing measured");
            return;
        };
        let bucket = "bench";
        server.create_bucket(bucket).await.unwrap();
        let endpoint = server.endpoint();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.bin");
        {
            // Written in 1 MiB pieces so the bench's own peak RSS stays small.
            use std::io::Write;
            let mut f = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
            let piece: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
            for _ in 0..mib {
                f.write_all(&piece).unwrap();
            }
            f.flush().unwrap();
        }
        let rss_before = peak_rss_mib();

        let storage = S3Storage::new(S3Config {
            endpoint: Some(endpoint.clone()),
            access_key_id: Some(MOTO_ACCESS_KEY_ID.to_owned()),
            secret_access_key: Some(MOTO_SECRET_ACCESS_KEY.to_owned()),
            timeout: Duration::from_secs(120),
            ..S3Config::new(bucket)
        })
        .unwrap();
        let key = StorageKey::new("ours.bin").unwrap();
        let ours_dst = dir.path().join("ours.out");
        let aws_dst = dir.path().join("aws.out");
        let aws_url = format!("s3://{bucket}/aws.bin");
        let (mut ours_up, mut ours_down, mut aws_up, mut aws_down) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            // Alternate who goes first so neither always meets a warm server.
            let ours_first = round % 2 == 0;
            if !ours_first {
                aws_up.push(aws(&endpoint, &[src.to_str().unwrap(), &aws_url]));
                aws_down.push(aws(&endpoint, &[&aws_url, aws_dst.to_str().unwrap()]));
            }
            ours_up.push(upload_file(&storage, &key, &src).await);
            ours_down.push(download_file(&storage, &key, &ours_dst).await);
            if ours_first {
                aws_up.push(aws(&endpoint, &[src.to_str().unwrap(), &aws_url]));
                aws_down.push(aws(&endpoint, &[&aws_url, aws_dst.to_str().unwrap()]));
            }
        }
        let rss_after = peak_rss_mib();
        assert_eq!(std::fs::metadata(&ours_dst).unwrap().len(), (mib << 20) as u64);
        assert!(std::fs::read(&ours_dst).unwrap() == std::fs::read(&src).unwrap(), "round trip differs");
        assert_eq!(std::fs::metadata(&aws_dst).unwrap().len(), (mib << 20) as u64);

        let line = |what: &str, ours: Vec<Duration>, theirs: Vec<Duration>| {
            let (o, t) = (median(ours), median(theirs));
            let rate = |d: Duration| mib as f64 / d.as_secs_f64();
            println!(
                "{what:<9} {mib} MiB | S3Storage {:>6.2} s ({:>6.1} MiB/s) | aws s3 cp {:>6.2} s ({:>6.1} MiB/s) | ratio ours/aws {:.2}",
                o.as_secs_f64(),
                rate(o),
                t.as_secs_f64(),
                rate(t),
                o.as_secs_f64() / t.as_secs_f64()
            );
        };
        println!("s3_vs_awscli: moto_server at {endpoint}, {rounds} rounds, medians (ratio < 1 = S3Storage faster)");
        line("upload", ours_up, aws_up);
        line("download", ours_down, aws_down);
        if let (Some(b), Some(a)) = (rss_before, rss_after) {
            println!("bench process peak RSS: {b:.0} MiB after building the {mib} MiB source file, {a:.0} MiB after all S3Storage transfers");
        }
    });
}
