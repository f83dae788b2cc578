//! One conformance suite for the [`Disk`] contract, run against every
//! implementation; then the crash and fault behaviour only `SimDisk` has.

use std::io::ErrorKind;
use std::path::Path;

use super::*;

fn p(s: &str) -> &Path {
    Path::new(s)
}

/// The contract every `Disk` must meet, on a fresh empty disk.
fn run_suite(disk: &dyn Disk) {
    // Files: create, write, read back, length.
    disk.create_dir_all(p("a/b")).unwrap();
    disk.create_dir_all(p("a/b")).unwrap();
    assert!(matches!(disk.open(p("a/b/none"), false), Err(e) if e.kind() == ErrorKind::NotFound));
    let f = disk.open(p("a/b/f"), true).unwrap();
    assert_eq!(f.len().unwrap(), 0);
    f.write_at(0, b"hello world").unwrap();
    f.write_at(6, b"WORLD").unwrap();
    let mut buf = [0u8; 11];
    f.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello WORLD");
    assert_eq!(f.len().unwrap(), 11);

    // Reading past the end is UnexpectedEof, not a short read.
    let mut big = [0u8; 12];
    assert_eq!(f.read_at(0, &mut big).unwrap_err().kind(), ErrorKind::UnexpectedEof);

    // A write past the end extends with zeros.
    f.write_at(13, b"!").unwrap();
    let mut buf = [0xffu8; 3];
    f.read_at(11, &mut buf).unwrap();
    assert_eq!(&buf, &[0, 0, b'!']);

    // Truncate cuts and extends.
    f.truncate(5).unwrap();
    assert_eq!(f.len().unwrap(), 5);
    f.truncate(7).unwrap();
    let mut buf = [0xffu8; 7];
    f.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"hello\0\0");
    f.sync().unwrap();

    // A second handle sees the same file.
    let g = disk.open(p("a/b/f"), true).unwrap();
    assert_eq!(g.len().unwrap(), 7);

    // Listing is sorted and includes directories.
    disk.open(p("a/b/c"), true).unwrap();
    disk.create_dir_all(p("a/b/d")).unwrap();
    assert_eq!(disk.list(p("a/b")).unwrap(), vec!["c", "d", "f"]);
    assert_eq!(disk.list(p("a")).unwrap(), vec!["b"]);
    assert!(disk.list(p("nope")).is_err());
    assert!(disk.exists(p("a/b/d")) && disk.exists(p("a/b/c")) && !disk.exists(p("a/x")));

    // Rename replaces the target atomically.
    write_atomic(disk, p("a/meta"), b"one").unwrap();
    write_atomic(disk, p("a/meta"), b"two!").unwrap();
    assert_eq!(read_all(disk, p("a/meta")).unwrap().unwrap(), b"two!");
    assert_eq!(read_all(disk, p("a/missing")).unwrap(), None);
    disk.rename(p("a/b/c"), p("a/b/f")).unwrap();
    assert!(!disk.exists(p("a/b/c")));
    assert_eq!(disk.open(p("a/b/f"), false).unwrap().len().unwrap(), 0);
    assert!(disk.rename(p("a/b/c"), p("a/b/g")).is_err());

    // Removal.
    disk.remove_file(p("a/b/f")).unwrap();
    assert!(disk.remove_file(p("a/b/f")).is_err());
    disk.sync_dir(p("a/b")).unwrap();
    disk.remove_dir_all(p("a/b")).unwrap();
    assert!(!disk.exists(p("a/b")) && !disk.exists(p("a/b/d")));
    assert_eq!(disk.list(p("a")).unwrap(), vec!["meta"]);
}

#[test]
fn fs_disk_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    run_suite(&FsDisk::new(dir.path()).unwrap());
}

#[test]
fn sim_disk_meets_the_contract() {
    run_suite(&SimDisk::new(1));
}

#[test]
fn sim_disk_meets_the_contract_under_crash_free_torn_config() {
    run_suite(&SimDisk::with_faults(2, FaultConfig { torn_writes: true, ..Default::default() }));
}

fn contents(disk: &dyn Disk, path: &str) -> Option<Vec<u8>> {
    read_all(disk, p(path)).unwrap()
}

#[test]
fn crash_keeps_synced_and_a_prefix_of_unsynced() {
    for seed in 0..200 {
        let disk = SimDisk::with_faults(seed, FaultConfig { torn_writes: true, ..Default::default() });
        disk.create_dir_all(p("d")).unwrap();
        disk.sync_dir(p("")).unwrap();
        let f = disk.open(p("d/log"), true).unwrap();
        disk.sync_dir(p("d")).unwrap();
        f.write_at(0, b"AAAA").unwrap();
        f.sync().unwrap();
        f.write_at(4, b"BBBB").unwrap();
        f.write_at(8, b"CCCC").unwrap();
        disk.crash();
        let after = contents(&disk, "d/log").expect("synced entry survives");
        assert!(after.starts_with(b"AAAA"), "seed {seed}: synced data lost");
        assert!(b"AAAABBBBCCCC".starts_with(&after), "seed {seed}: {after:?} is not a prefix");
    }
}

#[test]
fn crash_without_torn_writes_keeps_whole_writes() {
    for seed in 0..100 {
        let disk = SimDisk::new(seed);
        let f = disk.open(p("log"), true).unwrap();
        disk.sync_dir(p("")).unwrap();
        f.write_at(0, b"AAAA").unwrap();
        f.write_at(4, b"BBBB").unwrap();
        disk.crash();
        let after = contents(&disk, "log").unwrap();
        assert!([&b""[..], b"AAAA", b"AAAABBBB"].contains(&after.as_slice()), "seed {seed}: {after:?}");
    }
}

#[test]
fn unsynced_directory_entries_vanish() {
    let disk = SimDisk::new(3);
    let f = disk.open(p("new"), true).unwrap();
    f.write_at(0, b"data").unwrap();
    f.sync().unwrap();
    disk.crash();
    assert!(!disk.exists(p("new")), "file created without sync_dir survived");

    // A rename is durable only after sync_dir; before that the old name stays.
    write_atomic(&disk, p("meta"), b"v1").unwrap();
    let tmp = disk.open(p("meta.tmp"), true).unwrap();
    tmp.write_at(0, b"v2").unwrap();
    tmp.sync().unwrap();
    disk.rename(p("meta.tmp"), p("meta")).unwrap();
    assert_eq!(contents(&disk, "meta").unwrap(), b"v2");
    disk.crash();
    assert_eq!(contents(&disk, "meta").unwrap(), b"v1");
    // Removal likewise.
    disk.remove_file(p("meta")).unwrap();
    disk.crash();
    assert_eq!(contents(&disk, "meta").unwrap(), b"v1");
    assert_eq!(disk.crashes(), 3);
}

#[test]
fn a_directory_needs_its_whole_chain_synced() {
    let disk = SimDisk::new(8);
    disk.create_dir_all(p("a/b")).unwrap();
    let f = disk.open(p("a/b/f"), true).unwrap();
    f.write_at(0, b"x").unwrap();
    f.sync().unwrap();
    disk.sync_dir(p("a/b")).unwrap();
    disk.sync_dir(p("a")).unwrap();
    disk.crash();
    assert!(!disk.exists(p("a")), "the root never recorded 'a'");
    assert!(!disk.exists(p("a/b/f")));

    disk.create_dir_all(p("a/b")).unwrap();
    let f = disk.open(p("a/b/f"), true).unwrap();
    f.write_at(0, b"x").unwrap();
    f.sync().unwrap();
    for d in ["a/b", "a", ""] {
        disk.sync_dir(p(d)).unwrap();
    }
    disk.crash();
    assert_eq!(contents(&disk, "a/b/f").unwrap(), b"x");
}

#[test]
fn injected_errors_change_nothing() {
    let disk = SimDisk::new(4);
    let f = disk.open(p("f"), true).unwrap();
    disk.sync_dir(p("")).unwrap();
    f.write_at(0, b"ok").unwrap();
    disk.fail_next(DiskOp::Write);
    assert!(f.write_at(2, b"lost").is_err());
    assert_eq!(f.len().unwrap(), 2);
    disk.fail_next(DiskOp::Read);
    let mut b = [0u8; 2];
    assert!(f.read_at(0, &mut b).is_err());
    f.read_at(0, &mut b).unwrap();
    disk.fail_next(DiskOp::Sync);
    assert!(f.sync().is_err());
    disk.crash();
    // The failed sync made nothing durable: at most a prefix of "ok" is left.
    assert!(b"ok".starts_with(&contents(&disk, "f").unwrap()));
}

#[test]
fn probabilistic_errors_follow_the_seed() {
    let run = |seed| {
        let disk = SimDisk::with_faults(
            seed,
            FaultConfig { write_error_probability: 0.3, ..Default::default() },
        );
        let f = disk.open(p("f"), true).unwrap();
        (0..64).map(|i| f.write_at(i, b"x").is_ok()).collect::<Vec<_>>()
    };
    assert_eq!(run(9), run(9));
    assert!(run(9).contains(&false) && run(9).contains(&true));
}

#[test]
fn full_disk_refuses_growth() {
    let disk = SimDisk::with_faults(5, FaultConfig { capacity_bytes: Some(10), ..Default::default() });
    let f = disk.open(p("f"), true).unwrap();
    f.write_at(0, b"12345678").unwrap();
    let e = f.write_at(8, b"abc").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::StorageFull);
    assert_eq!(f.len().unwrap(), 8);
    f.write_at(0, b"overwrite").unwrap(); // overwriting in place still works
    f.write_at(9, b"z").unwrap();
}

#[test]
fn bit_flips_are_visible_to_readers() {
    let disk = SimDisk::new(6);
    let f = disk.open(p("f"), true).unwrap();
    f.write_at(0, &[0u8; 4]).unwrap();
    disk.flip_bit(p("f"), 2, 3).unwrap();
    let mut b = [0u8; 4];
    f.read_at(0, &mut b).unwrap();
    assert_eq!(b, [0, 0, 8, 0]);
}
