//! The chat writer's work per message, without the server: one commit of what 100 pairs
//! with 8 messages in flight each have queued (800 one-to-one messages, each with its
//! `ref`), through `Db::save_messages_checked` as `im::commit` calls it, on a real file
//! with the server's settings (WAL, `synchronous=FULL`).
//!
//! ```text
//! cargo bench --bench store
//! FASTIM_STORE_BATCHES=50 cargo bench --bench store    # 50 commits, no criterion (for callgrind)
//! ```
//!
//! The file grows as the bench runs, as a server's does: later commits insert into
//! larger indexes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};

use fastim::store::{Db, Message, NewUser, Peer};

const PAIRS: i64 = 100;
const IN_FLIGHT: i64 = 8;

struct Bench {
    db: Db,
    round: u64,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn new() -> Bench {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut db = Db::open(&dir.path().join("fastim.db")).expect("open");
        let mut ids = Vec::new();
        for i in 0..PAIRS * 2 {
            let user = db
                .create_user(
                    NewUser {
                        mobile: format!("1380000{i:04}"),
                        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned(),
                        nickname: format!("user {i}"),
                        avatar: String::new(),
                        sex: "U".to_owned(),
                        memo: String::new(),
                    },
                    1,
                )
                .expect("user");
            ids.push(user.id);
        }
        for pair in ids.chunks(2) {
            db.add_friend(pair[0], pair[1], 1).expect("friends");
        }
        Bench {
            db,
            round: 0,
            _dir: dir,
        }
    }

    /// The next commit's messages: 8 from each of the 100 senders, interleaved as they
    /// arrive at the loop.
    fn batch(&mut self) -> Vec<Message> {
        self.round += 1;
        let mut batch = Vec::with_capacity((PAIRS * IN_FLIGHT) as usize);
        for k in 0..IN_FLIGHT {
            for p in 0..PAIRS {
                let (from, to) = (2 * p + 1, 2 * p + 2);
                batch.push(Message {
                    media: 1,
                    content: format!(
                        "message {k} of round {} from {from}: hello there",
                        self.round
                    ),
                    // Time first, as the web client's and the load tool's refs are.
                    client_ref: Some(format!(
                        "{:011x}.{from}.{k}",
                        1_700_000_000_000 + self.round
                    )),
                    ..Message::new(from, Peer::User(to))
                });
            }
        }
        batch
    }

    fn commit(&mut self, batch: &[Message]) {
        let saved = self
            .db
            .save_messages_checked(batch, 1_700_000_000_000 + self.round as i64)
            .expect("commit");
        assert!(saved.iter().all(Result::is_ok), "every message allowed");
        black_box(saved);
    }
}

fn insert(c: &mut Criterion) {
    let mut bench = Bench::new();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements((PAIRS * IN_FLIGHT) as u64));
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("commit_800_one_to_one", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let batch = bench.batch();
                let start = Instant::now();
                bench.commit(&batch);
                spent += start.elapsed();
            }
            spent
        });
    });
    group.finish();
}

criterion_group!(benches, insert);

fn main() {
    if let Some(n) = std::env::var("FASTIM_STORE_BATCHES")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    {
        let mut bench = Bench::new();
        let start = Instant::now();
        for _ in 0..n {
            let batch = bench.batch();
            bench.commit(&batch);
        }
        let per = start.elapsed() / (n * (PAIRS * IN_FLIGHT) as u32);
        println!(
            "{n} commits of {} messages: {per:?} per message",
            PAIRS * IN_FLIGHT
        );
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
