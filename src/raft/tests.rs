//! The consensus core on its own: bootstrap, restart, the wire checks.

use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

use super::*;

fn cfg(id: u64, voters: &[u64]) -> RaftConfig {
    RaftConfig::new(MemberId(id), voters.iter().copied().map(MemberId).collect())
}

/// A disk that makes every Ready durable at once.
#[derive(Default)]
struct Disk {
    hard_state: wal::HardState,
    entries: Vec<wal::Entry>,
}

impl Disk {
    fn write(&mut self, p: &Persist) {
        assert!(p.snapshot.is_none());
        for e in &p.entries {
            self.entries.retain(|x| x.index < e.index);
            self.entries.push(e.as_wal().to_entry());
        }
        if let Some(hs) = p.hard_state {
            self.hard_state = hs;
        }
    }

    fn boot(&self) -> Boot {
        Boot { hard_state: self.hard_state, entries: self.entries.clone(), snapshot: None }
    }
}

/// Runs readies until quiet; returns the committed entries seen.
fn drain(core: &mut RaftCore, disk: &mut Disk) -> Vec<Committed> {
    let mut committed = Vec::new();
    while let Some(rd) = core.ready().expect("ready") {
        if let Some(p) = &rd.persist {
            disk.write(p);
            core.on_persisted(p.number);
        }
        committed.extend(rd.committed);
    }
    committed
}

fn elect_single(core: &mut RaftCore, disk: &mut Disk) -> Vec<Committed> {
    let mut seen = drain(core, disk);
    for _ in 0..40 {
        core.tick();
        seen.extend(drain(core, disk));
        if core.role() == Role::Leader {
            return seen;
        }
    }
    panic!("single member never became leader");
}

#[test]
fn a_single_member_cluster_bootstraps_elects_itself_and_commits() {
    let mut disk = Disk::default();
    let mut core = RaftCore::new(cfg(1, &[1]), Boot::default()).expect("new");
    let seen = elect_single(&mut core, &mut disk);
    // Entry 1 is the bootstrap conf change, entry 2 the leader's no-op.
    assert!(
        matches!(&seen[0].payload, Payload::ConfChange(o) if o.result.as_ref().is_ok_and(|m| m.voters == vec![MemberId(1)]))
    );
    core.propose(b"hello").expect("propose");
    let seen = drain(&mut core, &mut disk);
    let last = seen.last().expect("committed");
    assert_eq!(last.payload, Payload::Data(Bytes::from_static(b"hello")));
    assert_eq!(disk.hard_state.commit, last.index);
    assert_eq!(core.propose(b""), Err(ProposeError::Empty));
}

#[test]
fn a_restarted_member_knows_its_configuration_and_log() {
    let mut disk = Disk::default();
    let mut core = RaftCore::new(cfg(1, &[1]), Boot::default()).expect("new");
    elect_single(&mut core, &mut disk);
    core.propose(b"a").expect("propose");
    drain(&mut core, &mut disk);
    let last = core.last_index();
    drop(core);
    let mut core = RaftCore::new(cfg(1, &[1]), disk.boot()).expect("restart");
    assert_eq!(core.membership().voters, vec![MemberId(1)]);
    assert_eq!(core.last_index(), last);
    // Committed entries are handed out again from the start of the log.
    let seen = elect_single(&mut core, &mut disk);
    assert!(seen.iter().any(|c| c.payload == Payload::Data(Bytes::from_static(b"a"))));
}

#[test]
fn followers_refuse_proposals_with_a_leader_hint() {
    let core = RaftCore::new(cfg(2, &[1, 2, 3]), Boot::default());
    let mut core = core.expect("new");
    assert_eq!(core.propose(b"x"), Err(ProposeError::NotLeader { leader: None }));
    assert_eq!(core.read_index(b"r".to_vec()), Err(ReadIndexError::NoLeader));
}

#[test]
fn etcd_timing_becomes_ticks() {
    let c = cfg(1, &[1]).with_etcd_timing(Duration::from_millis(100), Duration::from_millis(1000)).expect("ok");
    assert_eq!((c.heartbeat_tick, c.election_tick), (1, 10));
    assert!(cfg(1, &[1]).with_etcd_timing(Duration::from_millis(100), Duration::from_millis(400)).is_err());
}

#[test]
fn bootstrap_entries_are_identical_on_every_member() {
    let mut logs = Vec::new();
    for id in [3, 1, 2] {
        let mut core = RaftCore::new(cfg(id, &[2, 3, 1]), Boot::default()).expect("new");
        let rd = core.ready().expect("ready").expect("a first ready");
        let p = rd.persist.expect("bootstrap entries to persist");
        logs.push((p.entries, p.hard_state));
    }
    assert!(logs.iter().all(|l| *l == logs[0]));
    assert_eq!(logs[0].0.len(), 3);
    assert_eq!(logs[0].1.map(|h| h.commit), Some(RaftIndex(3)));
}

fn append_msg(to: u64, from: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgAppend);
    m.to = to;
    m.from = from;
    m.term = 2;
    m.log_term = 1;
    m.index = 3;
    m.commit = 3;
    let mut e = Entry::default();
    e.index = 4;
    e.term = 2;
    e.data = Bytes::from_static(b"payload");
    m.entries = vec![e].into();
    m
}

#[test]
fn malformed_or_refused_bytes_are_errors() {
    let mut core = RaftCore::new(cfg(1, &[1, 2, 3]), Boot::default()).expect("new");
    let good = append_msg(1, 2).write_to_bytes().expect("encode");
    // A group (wire type 3) in field 20: RUSTSEC-2024-0437's trigger.
    let mut grouped = good.clone();
    grouped.extend_from_slice(&[(20 << 3 | 3) as u8, 0x01]);
    assert!(matches!(core.step(MemberId(2), &grouped), Err(StepError::Wire(WireError::Malformed(_)))));
    // Deeply nested groups are refused before protobuf sees them.
    let deep: Vec<u8> = [0x0b_u8; 100_000].to_vec();
    assert!(core.step(MemberId(2), &deep).is_err());
    assert!(core.step(MemberId(2), &good[..good.len() - 3]).is_err());
    assert!(core.step(MemberId(2), &[0xff; 11]).is_err());
    // Decodes, but is not for us / not from a peer / inconsistent.
    let for_other = append_msg(3, 2).write_to_bytes().expect("encode");
    assert!(matches!(core.step(MemberId(2), &for_other), Err(StepError::Wire(WireError::Refused(_)))));
    let mut hup = append_msg(1, 2);
    hup.set_msg_type(MessageType::MsgHup);
    assert!(core.step(MemberId(2), &hup.write_to_bytes().expect("encode")).is_err());
    let mut prop = append_msg(1, 2);
    prop.set_msg_type(MessageType::MsgPropose);
    assert!(core.step(MemberId(2), &prop.write_to_bytes().expect("encode")).is_err());
    let mut gap = append_msg(1, 2);
    gap.entries[0].index = 9;
    assert!(core.step(MemberId(2), &gap.write_to_bytes().expect("encode")).is_err());
    // A peer cannot speak for another.
    let forged = append_msg(1, 3).write_to_bytes().expect("encode");
    assert!(matches!(core.step(MemberId(2), &forged), Err(StepError::Wire(WireError::Refused(_)))));
    let mut empty_read = append_msg(1, 2);
    empty_read.set_msg_type(MessageType::MsgReadIndex);
    empty_read.entries.clear();
    assert!(core.step(MemberId(2), &empty_read.write_to_bytes().expect("encode")).is_err());
}

#[test]
fn random_and_mangled_bytes_never_panic() {
    let mut rng = XorShift::new(7);
    let good = append_msg(1, 2).write_to_bytes().expect("encode");
    let mut vote = append_msg(1, 3);
    vote.set_msg_type(MessageType::MsgRequestVote);
    vote.entries.clear();
    let vote = vote.write_to_bytes().expect("encode");
    for round in 0..3000 {
        let mut core = RaftCore::new(cfg(1, &[1, 2, 3]), Boot::default()).expect("new");
        let base = if round % 2 == 0 { &good } else { &vote };
        let mut bytes = base.clone();
        match rng.below(3) {
            0 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
            1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] ^= 1 << rng.below(8);
                }
            }
            _ => bytes = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
        }
        let _ = core.step(MemberId(2 + round % 2), &bytes);
        let mut disk = Disk::default();
        drain(&mut core, &mut disk);
    }
}
