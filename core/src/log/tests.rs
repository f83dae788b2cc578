//! Log tests: unit cases, then a model-based property test of append /
//! read / flush / crash / restart on a fault-injecting `SimDisk`.

use std::path::Path;
use std::sync::Arc;

use chronik_proto::batch::{self, Batches};
use kafka_protocol::records::Compression;
use proptest::prelude::*;

use super::*;
use crate::disk::{FaultConfig, SimDisk};
use crate::testing::{batch as make_batch, simple};

fn small_config() -> LogConfig {
    LogConfig { segment_bytes: 1024, segment_ms: i64::MAX / 2, retention_ms: -1, retention_bytes: -1, index_interval_bytes: 200 }
}

fn open(disk: &SimDisk, config: LogConfig) -> PartitionLog {
    PartitionLog::open(Arc::new(disk.clone()), Path::new("t-0"), config, 0).unwrap()
}

fn offsets_of(bytes: &[u8]) -> Vec<(i64, i64)> {
    Batches::new(bytes).map(|b| b.unwrap().0).map(|h| (h.base_offset, h.last_offset())).collect()
}

#[test]
fn append_read_and_roll() {
    let disk = SimDisk::new(1);
    let mut log = open(&disk, small_config());
    for i in 0..50 {
        let a = log.append(simple(3, 1000 + i), 0, 0).unwrap();
        assert_eq!(a.base_offset, i * 3);
    }
    assert!(log.segments.len() > 3, "small segments must roll");
    assert_eq!(log.log_end_offset(), 150);
    assert!(log.high_watermark() < 150);
    log.flush(0).unwrap();
    assert_eq!(log.high_watermark(), 150);
    // Reading from the middle of a batch returns that whole batch.
    let r = log.read(31, 1 << 20, true, log.high_watermark()).unwrap();
    let got = offsets_of(&r.bytes);
    assert_eq!(got[0], (30, 32));
    for w in got.windows(2) {
        assert_eq!(w[0].1 + 1, w[1].0);
    }
    // max_bytes smaller than a batch still returns one batch when asked.
    let r = log.read(0, 1, true, 150).unwrap();
    assert_eq!(offsets_of(&r.bytes), vec![(0, 2)]);
    assert!(log.read(0, 1, false, 150).unwrap().bytes.is_empty());
    // Nothing at or past the upper bound.
    assert!(log.read(150, 1 << 20, true, 150).unwrap().bytes.is_empty());
    let r = log.read(0, 1 << 20, true, 9).unwrap();
    assert_eq!(offsets_of(&r.bytes).last().unwrap().1, 8);
}

#[test]
fn restart_rebuilds_indexes_and_keeps_data() {
    let disk = SimDisk::new(2);
    let mut log = open(&disk, small_config());
    for i in 0..40 {
        log.append(simple(2, 10 * i), 0, 0).unwrap();
    }
    log.flush(0).unwrap();
    drop(log);
    // Remove one sealed segment's indexes: they must be rebuilt.
    let names = disk.list(Path::new("t-0")).unwrap();
    let index = names.iter().find(|n| n.ends_with(".index")).unwrap().clone();
    disk.remove_file(&Path::new("t-0").join(&index)).unwrap();
    let log = open(&disk, small_config());
    assert_eq!(log.log_end_offset(), 80);
    assert_eq!(log.high_watermark(), 80);
    let r = log.read(0, 1 << 20, true, 80).unwrap();
    assert!(!r.bytes.is_empty());
    assert!(disk.exists(&Path::new("t-0").join(&index)));
}

#[test]
fn torn_tail_is_truncated() {
    let disk = SimDisk::new(3);
    let mut log = open(&disk, LogConfig::default());
    log.append(simple(5, 1), 0, 0).unwrap();
    log.flush(0).unwrap();
    log.append(simple(5, 2), 0, 0).unwrap();
    let seg_path = log.active().path().to_path_buf();
    let len = log.active().size;
    drop(log);
    // Chop the second batch in half, as a torn write would.
    let f = disk.open(&seg_path, false).unwrap();
    f.truncate(len - 20).unwrap();
    let log = open(&disk, LogConfig::default());
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(disk.open(&seg_path, false).unwrap().len().unwrap(), log.active().size);
}

#[test]
fn bit_rot_below_the_recovery_point_is_corruption_and_above_it_a_torn_tail() {
    let disk = SimDisk::new(4);
    let mut log = open(&disk, LogConfig::default());
    log.append(simple(5, 1), 0, 0).unwrap();
    log.append(simple(5, 2), 0, 0).unwrap();
    log.flush(0).unwrap(); // synced, and the recovery point records it
    let seg_path = log.active().path().to_path_buf();
    let first_len = offsets_len(&log);
    disk.flip_bit(&seg_path, first_len + 70, 1).unwrap();
    assert!(matches!(log.read(5, 1 << 20, true, 10), Err(LogError::Corrupt { .. })), "reads check the CRC");
    drop(log);
    // Synced data is damaged: the partition must not silently lose it.
    let err = PartitionLog::open(Arc::new(disk.clone()), Path::new("t-0"), LogConfig::default(), 0).unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");

    // Damage above the recovery point (never synced) is a torn tail.
    let disk = SimDisk::new(5);
    let mut log = open(&disk, LogConfig::default());
    log.append(simple(5, 1), 0, 0).unwrap();
    log.flush(0).unwrap();
    log.append(simple(5, 2), 0, 0).unwrap();
    let seg_path = log.active().path().to_path_buf();
    let first_len = offsets_len(&log);
    drop(log);
    disk.flip_bit(&seg_path, first_len + 70, 1).unwrap();
    let log = open(&disk, LogConfig::default());
    assert_eq!(log.log_end_offset(), 5, "the corrupt unsynced batch is cut");
}

#[test]
fn a_damaged_base_offset_is_corruption_not_moved_records() {
    // The batch CRC does not cover the base offset (bytes 0-7): a flipped
    // bit there must be caught by the offset continuity check.
    let disk = SimDisk::new(6);
    let mut log = open(&disk, LogConfig::default());
    for i in 0..3 {
        log.append(simple(2, i), 0, 0).unwrap();
    }
    log.flush(0).unwrap();
    let seg_path = log.active().path().to_path_buf();
    let first_len = offsets_len(&log);
    // The second batch's base offset 2 becomes 6.
    disk.flip_bit(&seg_path, first_len + 7, 2).unwrap();
    assert!(matches!(log.read(0, 1 << 20, true, 6), Err(LogError::Corrupt { .. })), "read from before it");
    assert!(matches!(log.read(2, 1 << 20, true, 6), Err(LogError::Corrupt { .. })), "read from it");
}

fn offsets_len(log: &PartitionLog) -> u64 {
    let r = log.read(0, 1, true, log.high_watermark()).unwrap();
    r.bytes.len() as u64
}

#[test]
fn retention_by_size_and_time() {
    let disk = SimDisk::new(5);
    let mut config = small_config();
    config.retention_bytes = 2048;
    let mut log = open(&disk, config.clone());
    for i in 0..60 {
        log.append(simple(2, 1000 + i), 0, 0).unwrap();
    }
    log.flush(0).unwrap();
    let before = log.segments.len();
    assert!(log.enforce_retention(0).unwrap() > 0);
    assert!(log.segments.len() < before);
    assert!(log.size_bytes() <= 2048 + 1024);
    assert!(log.log_start_offset() > 0);
    let start = log.log_start_offset();
    assert!(log.read(start - 1, 100, true, log.high_watermark()).unwrap().bytes.is_empty());
    // Time: everything sealed is older than a day at t = 10 days.
    config.retention_bytes = -1;
    config.retention_ms = 24 * 3600 * 1000;
    log.set_config(config);
    log.enforce_retention(10 * 24 * 3600 * 1000).unwrap();
    assert_eq!(log.segments.len(), 1);
    drop(log);
    let log = open(&disk, small_config());
    assert_eq!(log.log_end_offset(), 120);
}

#[test]
fn timestamps_find_records() {
    let disk = SimDisk::new(6);
    let mut log = open(&disk, small_config());
    for i in 0..30 {
        log.append(make_batch(4, 1000 + 10 * i, None, Compression::Lz4), 0, 0).unwrap();
    }
    log.flush(0).unwrap();
    let hw = log.high_watermark();
    assert_eq!(log.offset_for_timestamp(0, hw).unwrap(), Some((0, 1000)));
    assert_eq!(log.offset_for_timestamp(1012, hw).unwrap(), Some((6, 1012)));
    assert_eq!(log.offset_for_timestamp(1002, hw).unwrap(), Some((2, 1002)));
    assert_eq!(log.offset_for_timestamp(99_999, hw).unwrap(), None);
    assert_eq!(log.max_timestamp_record(hw).unwrap(), Some((119, 1293)));
}

#[test]
fn producer_state_survives_restart() {
    let disk = SimDisk::new(7);
    let mut log = open(&disk, small_config());
    for i in 0..30 {
        log.append(make_batch(2, i, Some((9, 0, i as i32 * 2)), Compression::None), 0, 0).unwrap();
    }
    log.flush(0).unwrap();
    let before = log.producers.clone();
    drop(log);
    let log = open(&disk, small_config());
    assert_eq!(log.producers, before);
    let retry = batch::BatchHeader::parse(&make_batch(2, 0, Some((9, 0, 58)), Compression::None)).unwrap();
    assert!(matches!(log.producers.check(&retry), Ok(crate::producer::SequenceCheck::Duplicate(_))));
}

#[derive(Debug, Clone)]
enum Op {
    Append { count: i32, compressed: bool },
    Flush,
    Read { at: u8, max: u16 },
    Crash,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1i32..20, any::<bool>()).prop_map(|(count, compressed)| Op::Append { count, compressed }),
        2 => Just(Op::Flush),
        3 => (any::<u8>(), 1u16..3000).prop_map(|(at, max)| Op::Read { at, max }),
        1 => Just(Op::Crash),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The log against a `Vec` of batches: what is read is what was
    /// written, flushed data survives crashes, and a crash keeps a prefix.
    #[test]
    fn log_matches_model(seed in any::<u64>(), ops in proptest::collection::vec(op(), 1..60)) {
        let disk = SimDisk::with_faults(seed, FaultConfig { torn_writes: true, ..Default::default() });
        let config = small_config();
        let mut log = open(&disk, config.clone());
        // Stamped batches in offset order.
        let mut model: Vec<Vec<u8>> = Vec::new();
        let mut ts = 0;
        for op in ops {
            match op {
                Op::Append { count, compressed } => {
                    ts += 1;
                    let c = if compressed { Compression::Gzip } else { Compression::None };
                    let b = make_batch(count, ts, None, c);
                    let a = log.append(b.clone(), 0, ts).unwrap();
                    let mut stamped = b;
                    batch::stamp(&mut stamped, a.base_offset, 0);
                    let expected_base = model.last().map(|b| batch::BatchHeader::parse(b).unwrap().last_offset() + 1).unwrap_or(0);
                    prop_assert_eq!(a.base_offset, expected_base);
                    model.push(stamped);
                }
                Op::Flush => {
                    log.flush(0).unwrap();
                    prop_assert_eq!(log.high_watermark(), log.log_end_offset());
                }
                Op::Read { at, max } => {
                    let hw = log.high_watermark();
                    if hw == 0 { continue; }
                    let offset = at as i64 % hw;
                    let r = log.read(offset, max as usize, true, hw).unwrap();
                    let i = model.iter().position(|b| batch::BatchHeader::parse(b).unwrap().last_offset() >= offset).unwrap();
                    let mut expected = Vec::new();
                    for b in &model[i..] {
                        let h = batch::BatchHeader::parse(b).unwrap();
                        if h.last_offset() >= hw || (!expected.is_empty() && expected.len() + b.len() > max as usize) { break; }
                        expected.extend_from_slice(b);
                    }
                    prop_assert_eq!(r.bytes, expected);
                }
                Op::Crash => {
                    let durable = log.high_watermark();
                    drop(log);
                    disk.crash();
                    log = open(&disk, config.clone());
                    let leo = log.log_end_offset();
                    prop_assert!(leo >= durable, "lost flushed data: {} < {}", leo, durable);
                    model.retain(|b| batch::BatchHeader::parse(b).unwrap().last_offset() < leo);
                    let model_leo = model.last().map(|b| batch::BatchHeader::parse(b).unwrap().last_offset() + 1).unwrap_or(0);
                    prop_assert_eq!(leo, model_leo, "recovered LEO is not at a batch boundary of what was written");
                }
                Op::Restart => {
                    log.flush(0).unwrap();
                    let leo = log.log_end_offset();
                    drop(log);
                    log = open(&disk, config.clone());
                    prop_assert_eq!(log.log_end_offset(), leo);
                }
            }
            log.check_invariants();
        }
        // Finally everything durable reads back byte for byte.
        log.flush(0).unwrap();
        let all = log.read(0, usize::MAX >> 1, true, log.high_watermark()).unwrap();
        let everything: Vec<u8> = model.iter().flatten().copied().collect();
        prop_assert_eq!(all.bytes, everything);
    }
}

#[test]
fn leader_epochs_are_recorded_recovered_and_rebuilt() {
    let disk = SimDisk::new(9);
    let mut log = open(&disk, small_config());
    for (epoch, n) in [(0, 10), (2, 10), (2, 5), (5, 10)] {
        for _ in 0..n {
            log.append(simple(2, 1000), epoch, 0).unwrap();
        }
    }
    log.flush(0).unwrap();
    assert_eq!(log.epoch_starts(), &[(0, 0), (2, 20), (5, 50)]);
    assert_eq!(log.end_offset_for_epoch(0), (0, 20));
    assert_eq!(log.end_offset_for_epoch(3), (2, 50));
    assert_eq!(log.end_offset_for_epoch(5), (5, 70));
    // A torn or unsynced tail that took a whole epoch with it.
    log.append(simple(2, 1000), 7, 0).unwrap();
    assert_eq!(log.epoch_starts().last(), Some(&(7, 70)));
    drop(log);
    disk.crash();
    let log = open(&disk, small_config());
    assert_eq!(log.log_end_offset(), 70);
    assert_eq!(log.epoch_starts(), &[(0, 0), (2, 20), (5, 50)], "the lost epoch is forgotten");
    drop(log);
    // Without its checkpoint (a log from before it existed) the cache is rebuilt.
    disk.remove_file(&Path::new("t-0").join(epochs::CHECKPOINT)).unwrap();
    let log = open(&disk, small_config());
    assert_eq!(log.end_offset_for_epoch(5), (5, 70));
    assert_eq!(log.epoch_starts().first(), Some(&(0, 0)));
}

/// A leader's log with batches of 3 records at epochs 1, 1, 2, 2, 2 (offsets 0..15).
fn leader_log(disk: &SimDisk) -> PartitionLog {
    let mut log = PartitionLog::open(Arc::new(disk.clone()), Path::new("leader"), small_config(), 0).unwrap();
    for (i, epoch) in [1, 1, 2, 2, 2].into_iter().enumerate() {
        log.append(simple(3, 1000 + i as i64), epoch, 0).unwrap();
    }
    log.flush(0).unwrap();
    log
}

#[test]
fn a_follower_appends_its_leaders_batches_as_they_are() {
    let disk = SimDisk::new(40);
    let leader = leader_log(&disk);
    let all = leader.read(0, 1 << 20, true, leader.log_end_offset()).unwrap().bytes;
    let mut f = open(&disk, small_config());
    // Not from the follower's log end: refused, nothing written.
    let from_3 = leader.read(3, 1 << 20, true, 15).unwrap().bytes;
    assert!(matches!(f.append_replicated(&from_3, 0), Err(LogError::NotContiguous(_))));
    assert_eq!(f.log_end_offset(), 0);
    f.append_replicated(&all, 0).unwrap();
    assert_eq!(f.log_end_offset(), 15);
    assert_eq!(f.epoch_starts(), &[(1, 0), (2, 6)]);
    assert_eq!(f.read(0, 1 << 20, true, 15).unwrap().bytes, all, "stored byte for byte");
    // A corrupted batch (CRC) is refused.
    let mut bad = leader.read(12, 1 << 20, true, 15).unwrap().bytes;
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let mut g = open(&SimDisk::new(41), small_config());
    g.append_replicated(&leader.read(0, 1 << 20, true, 12).unwrap().bytes, 0).unwrap();
    assert!(matches!(g.append_replicated(&bad, 0), Err(LogError::NotContiguous(_))));
    assert_eq!(g.log_end_offset(), 12);
    // An epoch older than the follower's latest is refused.
    let mut h = open(&SimDisk::new(42), small_config());
    h.begin_epoch(5).unwrap();
    assert!(matches!(h.append_replicated(&all, 0), Err(LogError::NotContiguous(_))));
}

#[test]
fn truncation_cuts_the_tail_and_rebuilds_producer_state_and_epochs() {
    let disk = SimDisk::new(43);
    let mut log = open(&disk, small_config());
    for i in 0..20 {
        log.append(make_batch(2, 1000 + i as i64, Some((7, 0, i * 2)), Compression::None), if i < 10 { 1 } else { 2 }, 0).unwrap();
    }
    log.flush(0).unwrap();
    assert!(log.segments.len() > 1, "spans segments");
    assert_eq!(log.epoch_starts(), &[(1, 0), (2, 20)]);
    // Cut in the middle of a batch: the whole batch goes.
    let log = log.truncate_to(15, 0).unwrap();
    assert_eq!(log.log_end_offset(), 14);
    assert_eq!(log.durable_end(), 14);
    assert_eq!(log.epoch_starts(), &[(1, 0)]);
    // The producer's next sequence is as of offset 14: sequence 14 is new again.
    let h = chronik_proto::batch::BatchHeader::parse(&make_batch(2, 0, Some((7, 0, 14)), Compression::None)).unwrap();
    assert!(matches!(log.producers.check(&h), Ok(crate::producer::SequenceCheck::Append)));
    log.check_invariants();
    // It survives a restart as it is.
    drop(log);
    let log = open(&disk, small_config());
    assert_eq!(log.log_end_offset(), 14);
    assert_eq!(log.epoch_starts(), &[(1, 0)]);
    // Truncating at or past the end only forgets epochs that began there.
    let mut log = log;
    log.begin_epoch(3).unwrap();
    let log = log.truncate_to(14, 0).unwrap();
    assert_eq!(log.epoch_starts(), &[(1, 0)]);
    assert_eq!(log.log_end_offset(), 14);
    // Reset: empty, beginning where the leader's log now begins.
    let log = log.reset_to(100, 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
    assert!(log.epoch_starts().is_empty());
    drop(log);
    let log = open(&disk, small_config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
}

/// A flush takes its target under the partition lock and syncs outside
/// it; a follower's truncation and new appends past the old end in between
/// must not count as synced by it (the flush synced the old files).
#[test]
fn a_sync_taken_before_a_truncation_does_not_make_later_appends_durable() {
    let disk = SimDisk::new(44);
    let mut log = open(&disk, small_config());
    for i in 0..4 {
        log.append(simple(3, 1000 + i), 1, 0).unwrap();
    }
    log.flush(0).unwrap();
    log.append(simple(3, 1004), 1, 0).unwrap();
    let target = log.flush_target().expect("unsynced records");
    assert_eq!(target.offset, 15);
    target.file.sync().unwrap();
    // Meanwhile: cut back to 6, and 12 new records at a new epoch, unsynced.
    let mut log = log.truncate_to(6, 0).unwrap();
    for i in 0..4 {
        log.append(simple(3, 2000 + i), 2, 0).unwrap();
    }
    assert_eq!((log.log_end_offset(), log.durable_end()), (18, 6));
    log.flushed(&target);
    assert_eq!(log.durable_end(), 6, "the old sync covered none of the new records");
    let target = log.flush_target().unwrap();
    target.file.sync().unwrap();
    log.flushed(&target);
    assert_eq!(log.durable_end(), 18);
}

/// A follower's truncation that fails part-way (EIO on a write or a sync)
/// and then loses power leaves a log that opens cleanly and holds a prefix
/// of the old one, readable to its end: never a gap hidden behind a sealed
/// segment's stale index (found by the cluster simulation, seed 91).
#[test]
fn a_truncation_cut_short_by_a_crash_leaves_a_prefix_of_the_old_log() {
    for seed in 0..200u64 {
        let disk = SimDisk::new(seed);
        let mut log = open(&disk, small_config());
        for i in 0..20 {
            log.append(make_batch(2, 1000 + i as i64, None, Compression::None), if i < 10 { 1 } else { 2 }, 0).unwrap();
        }
        log.flush(0).unwrap();
        assert!(log.segments.len() > 2, "spans segments");
        let before = log.read(0, usize::MAX, true, log.log_end_offset()).unwrap().bytes;
        disk.set_faults(FaultConfig { write_error_probability: 0.2, sync_error_probability: 0.3, ..Default::default() });
        let to = if seed % 2 == 0 { 9 } else { 31 };
        let _ = log.truncate_to(to, 0);
        disk.set_faults(FaultConfig::default());
        disk.crash();
        let log = PartitionLog::open(Arc::new(disk.clone()), Path::new("t-0"), small_config(), 0)
            .unwrap_or_else(|e| panic!("seed {seed}: the log does not open after a failed truncation: {e}"));
        let end = log.log_end_offset();
        assert!(end >= to - 1, "seed {seed}: cut below the truncation point: {end}");
        let after = log.read(0, usize::MAX, true, end).unwrap_or_else(|e| panic!("seed {seed}: unreadable to its end {end}: {e}")).bytes;
        assert_eq!(after[..], before[..after.len()], "seed {seed}: not a prefix of the old log");
        log.check_invariants();
    }
}

/// A log whose creation failed on a directory sync is created again by a
/// retry; the retry must make the directory durable, or a crash takes the
/// directory and every record fsynced into it away (found by the cluster
/// simulation, seed 163).
#[test]
fn a_log_created_again_after_a_failed_directory_sync_keeps_its_data_across_a_crash() {
    let disk = SimDisk::new(5);
    disk.fail_next(crate::disk::DiskOp::Sync);
    let dir = Path::new("topics/x/0");
    assert!(PartitionLog::open(Arc::new(disk.clone()), dir, small_config(), 0).is_err(), "the first sync fails");
    let mut log = PartitionLog::open(Arc::new(disk.clone()), dir, small_config(), 0).unwrap();
    log.append(simple(3, 1), 1, 0).unwrap();
    log.flush(0).unwrap();
    assert_eq!(log.durable_end(), 3);
    drop(log);
    disk.crash();
    let log = PartitionLog::open(Arc::new(disk.clone()), dir, small_config(), 0).unwrap();
    assert_eq!(log.log_end_offset(), 3, "fsynced records survive the crash");
}
