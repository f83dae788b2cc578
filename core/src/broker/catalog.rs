//! The topic catalogue: names, ids, partition counts and config overrides,
//! plus the cluster id and the producer-id high-water mark. Persisted as one
//! JSON file on the [`Disk`](crate::disk::Disk), replaced atomically on every
//! change (write temp, fsync, rename, fsync dir) before the change is
//! acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::disk::{self, Disk};

pub const CATALOG_PATH: &str = "meta/catalog.json";
/// How much of a topic's name its directory name keeps (plus `.` and 32 hex
/// digits of its id: 233 bytes, under the usual 255-byte limit).
const TOPIC_DIR_PREFIX_MAX: usize = 200;
const _: () = assert!(TOPIC_DIR_PREFIX_MAX + 1 + 32 <= 255);

/// Producer ids are reserved on disk this many at a time.
pub const PRODUCER_ID_BLOCK: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// In a cluster: the controller log index that created it (the topic is
    /// the controller's, reconciled with its image). `None`: this broker's
    /// own topic (a single node's, or an internal one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_index: Option<u64>,
}

impl TopicRecord {
    /// The directory holding this topic's partitions: unique per incarnation,
    /// so a deleted and re-created topic never sees the old data.
    pub fn dir(&self) -> PathBuf {
        // File names are limited to 255 bytes and topic names may have 249:
        // keep a readable prefix; the id makes it unique.
        let prefix: String = self.name.chars().take(TOPIC_DIR_PREFIX_MAX).collect();
        Path::new("topics").join(format!("{prefix}.{}", self.id.simple()))
    }

    pub fn partition_dir(&self, partition: i32) -> PathBuf {
        self.dir().join(partition.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub cluster_id: String,
    /// Producer ids below this may have been handed out.
    pub producer_id_reserved: i64,
    pub topics: BTreeMap<String, TopicRecord>,
}

impl Catalog {
    pub fn load(disk: &dyn Disk) -> Result<Option<Catalog>, String> {
        let path = Path::new(CATALOG_PATH);
        match disk::read_all(disk, path) {
            Ok(None) => Ok(None),
            Ok(Some(bytes)) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{CATALOG_PATH} is not a valid catalog: {e}")),
            Err(e) => Err(format!("cannot read {CATALOG_PATH}: {e}")),
        }
    }

    pub fn save(&self, disk: &dyn Disk) -> std::io::Result<()> {
        if !disk.exists(Path::new("meta")) {
            disk.create_dir_all(Path::new("meta"))?;
            disk.sync_dir(Path::new(""))?;
        }
        let bytes = serde_json::to_vec_pretty(self).expect("catalog serializes");
        disk::write_atomic(disk, Path::new(CATALOG_PATH), &bytes)
    }
}
