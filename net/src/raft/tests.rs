//! openraft's own storage test suite against our log store and state
//! machine, on a real file system and on the fault-free simulated disk.

use std::sync::Arc;

use chronik_core::disk::{Disk, FsDisk, SimDisk};
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;

use super::store::{LogStore, StateMachine};
use super::{Cfg, NodeId};

struct OnFs;

impl StoreBuilder<Cfg, LogStore, StateMachine, tempfile::TempDir> for OnFs {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let disk: Arc<dyn Disk> = Arc::new(FsDisk::new(dir.path()).expect("fs disk"));
        let log = LogStore::open(disk.clone(), "raft".as_ref()).expect("log opens");
        let sm = StateMachine::open(disk, "raft".as_ref()).expect("state machine opens");
        Ok((dir, log, sm))
    }
}

struct OnSimDisk;

impl StoreBuilder<Cfg, LogStore, StateMachine, ()> for OnSimDisk {
    async fn build(&self) -> Result<((), LogStore, StateMachine), StorageError<NodeId>> {
        let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(1));
        let log = LogStore::open(disk.clone(), "raft".as_ref()).expect("log opens");
        let sm = StateMachine::open(disk, "raft".as_ref()).expect("state machine opens");
        Ok(((), log, sm))
    }
}

#[test]
fn openraft_storage_suite_on_the_file_system() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(OnFs)
}

#[test]
fn openraft_storage_suite_on_the_simulated_disk() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(OnSimDisk)
}

/// A member restarted before its snapshot names the cluster still knows
/// its cluster at once (Raft messages carry it; see `network.rs`).
#[test]
fn the_cluster_id_survives_a_restart_without_a_snapshot() {
    use chronik_core::cluster::image::Command;
    use openraft::storage::RaftStateMachine;
    use openraft::{Entry, EntryPayload};
    let disk: Arc<dyn Disk> = Arc::new(SimDisk::new(2));
    let _log = LogStore::open(disk.clone(), "raft".as_ref()).expect("log opens (and makes raft/)");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut sm = StateMachine::open(disk.clone(), "raft".as_ref()).expect("opens");
        assert_eq!(sm.cluster_id(), None);
        let named = Entry::<Cfg> { log_id: openraft::testing::log_id(1, 1, 1), payload: EntryPayload::Normal(Command::InitCluster { cluster_id: "alpha".into() }) };
        sm.apply([named]).await.expect("applies");
        assert_eq!(sm.cluster_id().as_deref(), Some("alpha"));
    });
    let sm = StateMachine::open(disk, "raft".as_ref()).expect("opens again");
    assert_eq!(sm.with_image(|i| i.cluster_id.clone()), None, "no snapshot: the image starts empty");
    assert_eq!(sm.cluster_id().as_deref(), Some("alpha"));
}
