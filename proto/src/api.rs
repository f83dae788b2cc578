//! The API keys and versions Chronik implements, fully.
//!
//! A key is listed here only when every version in its range is implemented by
//! the broker; ApiVersions advertises exactly this table, and the frame decoder
//! refuses any other key or version.

use kafka_protocol::messages::ApiKey;

/// One implemented API with its inclusive version range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supported {
    pub key: ApiKey,
    pub version_min: i16,
    pub version_max: i16,
}

const fn s(key: ApiKey, version_min: i16, version_max: i16) -> Supported {
    Supported { key, version_min, version_max }
}

/// Every API Chronik serves, in key order.
pub const SUPPORTED: &[Supported] = &[
    s(ApiKey::Produce, 3, 13),
    s(ApiKey::Fetch, 4, 18),
    s(ApiKey::ListOffsets, 1, 10),
    s(ApiKey::Metadata, 0, 13),
    s(ApiKey::OffsetCommit, 2, 9),
    s(ApiKey::OffsetFetch, 1, 9),
    s(ApiKey::FindCoordinator, 0, 6),
    s(ApiKey::JoinGroup, 0, 9),
    s(ApiKey::Heartbeat, 0, 4),
    s(ApiKey::LeaveGroup, 0, 5),
    s(ApiKey::SyncGroup, 0, 5),
    s(ApiKey::DescribeGroups, 0, 6),
    s(ApiKey::ListGroups, 0, 5),
    s(ApiKey::ApiVersions, 0, 4),
    s(ApiKey::CreateTopics, 2, 7),
    s(ApiKey::DeleteTopics, 1, 6),
    s(ApiKey::InitProducerId, 0, 5),
    s(ApiKey::OffsetForLeaderEpoch, 2, 4),
    s(ApiKey::DescribeConfigs, 1, 4),
    s(ApiKey::AlterConfigs, 0, 2),
    s(ApiKey::CreatePartitions, 0, 3),
    s(ApiKey::DeleteGroups, 0, 2),
    s(ApiKey::IncrementalAlterConfigs, 0, 1),
    s(ApiKey::OffsetDelete, 0, 0),
    s(ApiKey::DescribeCluster, 0, 2),
    s(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    s(ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The implemented version range of `key`, if Chronik serves it at all.
pub fn supported(key: ApiKey) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.key == key)
}

/// Whether Chronik implements `version` of `key`.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|s| (s.version_min..=s.version_max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_within_the_codec() {
        for s in SUPPORTED {
            let codec = s.key.valid_versions();
            assert!(s.version_min <= s.version_max, "{:?}", s.key);
            assert!(s.version_min >= codec.min && s.version_max <= codec.max, "{:?} outside codec range", s.key);
        }
        let mut keys: Vec<i16> = SUPPORTED.iter().map(|s| s.key as i16).collect();
        let sorted = { let mut k = keys.clone(); k.sort(); k.dedup(); k };
        keys.dedup();
        assert_eq!(keys, sorted, "table must be in key order without duplicates");
    }
}
