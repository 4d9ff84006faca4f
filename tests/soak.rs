//! A seeded soak: random faults from the reliability list, one after the
//! other, against three replicas (each behind its own fault proxy) and a
//! real ZooKeeper. After every fault a leader must write again within a
//! bound; at the end the invariant checker must find nothing.
//!
//! `SOAK_FAULTS` (default 40) and `SOAK_SEED` (default: from the clock,
//! printed) control it; a failure prints the seed to reproduce it:
//!
//! ```sh
//! SOAK_FAULTS=300 SOAK_SEED=42 cargo test --release --test soak -- --nocapture
//! ```

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::group::Group;
use common::proxy::{FaultProxy, Mode};
use common::wait_until;
use common::zk::ZkCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FAULTS: [&str; 8] = [
    "leader SIGKILL",
    "leader SIGTERM",
    "leader SIGSTOP 3s",
    "candidate SIGKILL",
    "leader link blackhole 3s",
    "leader link half-open 3s",
    "leader link delayed 1s for 3s",
    "ZooKeeper crash and restart",
];

struct Soak {
    zk: ZkCluster,
    proxies: Vec<FaultProxy>,
    g: Group,
    /// Replica index -> proxy slot.
    slot_of: Vec<usize>,
    seed: u64,
}

impl Soak {
    fn spawn_in_slot(&mut self, slot: usize) {
        self.g.servers = self.proxies[slot].addr().to_string();
        self.g.spawn(1);
        self.slot_of.push(slot);
    }

    fn running(&self) -> Vec<usize> {
        (0..self.g.replicas.len())
            .filter(|&i| self.g.replicas[i].is_some())
            .collect()
    }

    fn leader(&self) -> usize {
        self.g.wait_leader(Duration::from_secs(30))
    }

    fn replace(&mut self, i: usize) {
        if let Some(r) = self.g.replicas[i].take() {
            r.wait_exit(Duration::from_secs(10));
        }
        let slot = self.slot_of[i];
        self.spawn_in_slot(slot);
    }

    fn link_fault(&mut self, leader: usize, mode: Mode) {
        let proxy = &self.proxies[self.slot_of[leader]];
        proxy.set_mode(mode);
        std::thread::sleep(Duration::from_secs(3));
        proxy.set_mode(Mode::Pass);
    }

    fn inject(&mut self, fault: usize, rng: &mut StdRng) {
        let leader = self.leader();
        match fault {
            0 => {
                self.g.replica(leader).signal(libc::SIGKILL);
                self.replace(leader);
            }
            1 => {
                self.g.replica(leader).signal(libc::SIGTERM);
                self.replace(leader);
            }
            2 => {
                self.g.replica(leader).signal(libc::SIGSTOP);
                std::thread::sleep(Duration::from_secs(3));
                self.g.replica(leader).signal(libc::SIGCONT);
            }
            3 => {
                let others: Vec<usize> = self
                    .running()
                    .into_iter()
                    .filter(|&i| i != leader)
                    .collect();
                let victim = others[rng.random_range(0..others.len())];
                self.g.replica(victim).signal(libc::SIGKILL);
                self.replace(victim);
            }
            4 => self.link_fault(leader, Mode::Blackhole),
            5 => self.link_fault(leader, Mode::HalfOpen),
            6 => self.link_fault(leader, Mode::Delay(Duration::from_secs(1))),
            7 => {
                self.zk.kill(0);
                std::thread::sleep(Duration::from_secs(1));
                self.zk.start(0);
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn a_seeded_soak_of_random_faults_keeps_one_writer_and_always_recovers() {
    let faults: usize = std::env::var("SOAK_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        });
    eprintln!("soak: {faults} faults, SOAK_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);

    let zk = ZkCluster::standalone();
    let proxies: Vec<FaultProxy> = (0..3)
        .map(|_| FaultProxy::start(zk.server_addr(0)))
        .collect();
    let g = Group::new("unused:1");
    let mut soak = Soak {
        zk,
        proxies,
        g,
        slot_of: Vec::new(),
        seed,
    };
    for slot in 0..3 {
        soak.spawn_in_slot(slot);
    }
    soak.leader();

    let mut recoveries: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for n in 0..faults {
        let fault = rng.random_range(0..FAULTS.len());
        let newest = soak.g.newest_record().map(|r| (r.token, r.seq));
        // Recovery counts from the start of the fault: a successor may take
        // over while the fault (a frozen leader, a cut link) still lasts.
        let t0 = Instant::now();
        soak.inject(fault, &mut rng);
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(20), || {
            soak.g.newest_record().map(|r| (r.token, r.seq)) > newest
        });
        assert!(
            ok,
            "fault #{n} ({}) : no leader wrote within 30 s; reproduce with SOAK_SEED={}\n{}",
            FAULTS[fault],
            soak.seed,
            soak.g.logs()
        );
        recoveries
            .entry(FAULTS[fault])
            .or_default()
            .push(t0.elapsed());
        let report = election::verify::check(&soak.g.files_dir(), None).unwrap();
        assert!(
            report.is_clean(),
            "fault #{n} ({}): {:?}; reproduce with SOAK_SEED={}\n{}",
            FAULTS[fault],
            report.violations,
            soak.seed,
            soak.g.logs()
        );
    }
    soak.g.stop_all();
    soak.g.assert_invariants();
    let report = election::verify::check(&soak.g.files_dir(), None).unwrap();
    eprintln!(
        "soak: {faults} faults survived, {} files, {} leaderships, 0 violations (seed {seed})",
        report.files, report.leaderships
    );
    for (kind, times) in &recoveries {
        let mut t = times.clone();
        t.sort();
        eprintln!(
            "  {kind:<32} x{:<3} recovery median {:?} max {:?}",
            t.len(),
            t[t.len() / 2],
            t[t.len() - 1]
        );
    }
}
