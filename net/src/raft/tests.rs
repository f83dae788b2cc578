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
