//! Committed offsets (OffsetCommit / OffsetFetch / OffsetDelete) and the
//! group admin APIs (ListGroups / DescribeGroups / DeleteGroups).

use std::collections::BTreeSet;

use chronik_proto::ResponseError::{self, *};
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};

use super::classic::{ClassicGroup, ClassicState};
use super::record::OffsetValue;
use super::{text, Group, GroupResult, Groups, Topics, GROUP_OPERATIONS};

/// A validated OffsetCommit: the response as it will be if the records
/// become durable, and what to write.
pub struct CommitPlan {
    pub group: String,
    pub response: OffsetCommitResponse,
    pub entries: Vec<(String, i32, OffsetValue)>,
    /// Where each entry's answer is: (topic index, partition index).
    pub slots: Vec<(usize, usize)>,
    /// For [`Groups::apply_commit`].
    pub seq: u64,
}

impl CommitPlan {
    /// The records did not become durable: those partitions fail.
    pub fn fail(&mut self, error: ResponseError) {
        for &(t, p) in &self.slots {
            self.response.topics[t].partitions[p].error_code = error.code();
        }
    }
}


impl Groups {
    fn validate_commit(&mut self, group_id: &str, r: &OffsetCommitRequest, version: i16) -> GroupResult<()> {
        // An empty group id is valid for commits (and fetches, describes and
        // deletes), as in Kafka, for old clients that commit without a group.
        self.serves(group_id)?;
        let generation = r.generation_id_or_member_epoch;
        let member = r.member_id.as_str();
        let instance = r.group_instance_id.as_deref();
        match self.groups.get(group_id) {
            None if generation < 0 => {
                // A standalone commit creates an empty group, as in Kafka.
                self.groups.insert(group_id.to_string(), Group::Classic(ClassicGroup::new()));
                Ok(())
            }
            None => Err(if version >= 9 { GroupIdNotFound } else { IllegalGeneration }),
            Some(Group::Classic(g)) => g.validate_commit(member, instance, generation),
            Some(Group::Consumer(g)) => g.validate_commit(member, generation),
        }
    }

    /// `wall` stamps the commits (Kafka's commit timestamp).
    pub fn prepare_commit(&mut self, r: OffsetCommitRequest, version: i16, topics: &Topics, wall: i64) -> CommitPlan {
        let group_id = r.group_id.0.to_string();
        let check = self.validate_commit(&group_id, &r, version);
        if let Err(e) = check {
            tracing::debug!(group = %group_id, member = %r.member_id.as_str(), generation = r.generation_id_or_member_epoch, error = ?e, "OffsetCommit refused");
        }
        let max_metadata = self.config.offset_metadata_max_bytes;
        let mut entries = Vec::new();
        let mut slots = Vec::new();
        let mut out_topics = Vec::with_capacity(r.topics.len());
        for (ti, t) in r.topics.iter().enumerate() {
            let name = t.name.0.to_string();
            let info = topics.get(&name);
            let mut parts = Vec::with_capacity(t.partitions.len());
            for (pi, p) in t.partitions.iter().enumerate() {
                let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
                let error = match check {
                    Err(e) => Some(e),
                    Ok(()) if !info.is_some_and(|i| (0..i.partitions).contains(&p.partition_index)) => Some(UnknownTopicOrPartition),
                    Ok(()) if metadata.len() > max_metadata => Some(OffsetMetadataTooLarge),
                    Ok(()) => None,
                };
                if error.is_none() {
                    let leader_epoch = if version >= 6 { p.committed_leader_epoch } else { -1 };
                    entries.push((name.clone(), p.partition_index, OffsetValue { offset: p.committed_offset, leader_epoch, metadata, commit_timestamp: wall }));
                    slots.push((ti, pi));
                }
                parts.push(
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(error.map_or(0, |e| e.code())),
                );
            }
            out_topics.push(OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(parts));
        }
        let seq = self.next_seq();
        CommitPlan { group: group_id, response: OffsetCommitResponse::default().with_topics(out_topics), entries, slots, seq }
    }

    fn validate_fetch(&self, group_id: &str, member_id: Option<&str>, epoch: i32) -> GroupResult<()> {
        self.serves(group_id)?;
        match (self.groups.get(group_id), member_id) {
            (Some(Group::Consumer(g)), Some(member)) if !member.is_empty() => {
                let m = g.members.get(member).ok_or(UnknownMemberId)?;
                if m.epoch != epoch {
                    return Err(StaleMemberEpoch);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Committed offsets of `group` for `wanted` (None: all it has).
    fn fetch_offsets(&self, group: &str, wanted: Option<Vec<(String, Vec<i32>)>>) -> Vec<(String, Vec<(i32, i64, i32, String)>)> {
        let committed = self.offsets.get(group);
        match wanted {
            None => {
                let mut out: Vec<(String, Vec<(i32, i64, i32, String)>)> = Vec::new();
                for ((topic, partition), c) in committed.into_iter().flatten() {
                    let entry = (*partition, c.offset, c.leader_epoch, c.metadata.clone());
                    match out.last_mut() {
                        Some((t, ps)) if t == topic => ps.push(entry),
                        _ => out.push((topic.clone(), vec![entry])),
                    }
                }
                out
            }
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let ps = partitions
                        .into_iter()
                        .map(|p| match committed.and_then(|c| c.get(&(topic.clone(), p))) {
                            Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone()),
                            None => (p, -1, -1, String::new()),
                        })
                        .collect();
                    (topic, ps)
                })
                .collect(),
        }
    }

    pub fn offset_fetch(&self, r: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = r
                .groups
                .into_iter()
                .map(|g| {
                    let id = g.group_id.0.to_string();
                    let mut out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                    let check = self.validate_fetch(&id, if version >= 9 { g.member_id.as_deref() } else { None }, g.member_epoch);
                    if let Err(e) = check {
                        out.error_code = e.code();
                        return out;
                    }
                    let wanted = g.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
                    out.topics = self
                        .fetch_offsets(&id, wanted)
                        .into_iter()
                        .map(|(topic, ps)| {
                            OffsetFetchResponseTopics::default().with_name(TopicName(text(topic))).with_partitions(
                                ps.into_iter()
                                    .map(|(p, offset, epoch, metadata)| {
                                        OffsetFetchResponsePartitions::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(offset)
                                            .with_committed_leader_epoch(epoch)
                                            .with_metadata(Some(text(metadata)))
                                    })
                                    .collect(),
                            )
                        })
                        .collect();
                    out
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let id = r.group_id.0.to_string();
        if let Err(e) = self.validate_fetch(&id, None, -1) {
            // v1 has no top-level error: every partition asked for carries it.
            let topics = r
                .topics
                .unwrap_or_default()
                .into_iter()
                .map(|t| {
                    OffsetFetchResponseTopic::default().with_name(t.name).with_partitions(
                        t.partition_indexes
                            .into_iter()
                            .map(|p| OffsetFetchResponsePartition::default().with_partition_index(p).with_committed_offset(-1).with_error_code(e.code()))
                            .collect(),
                    )
                })
                .collect();
            let mut response = OffsetFetchResponse::default().with_topics(topics);
            if version >= 2 {
                response.error_code = e.code();
            }
            return response;
        }
        let wanted = r.topics.map(|ts| ts.into_iter().map(|t| (t.name.0.to_string(), t.partition_indexes)).collect());
        let topics = self
            .fetch_offsets(&id, wanted)
            .into_iter()
            .map(|(topic, ps)| {
                OffsetFetchResponseTopic::default().with_name(TopicName(text(topic))).with_partitions(
                    ps.into_iter()
                        .map(|(p, offset, epoch, metadata)| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(if version >= 5 { epoch } else { -1 })
                                .with_metadata(Some(text(metadata)))
                        })
                        .collect(),
                )
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    /// OffsetDelete: removes committed offsets the group no longer uses.
    /// Returns the response; deletions are in the writes.
    pub fn offset_delete(&mut self, r: OffsetDeleteRequest, topics: &Topics, now: i64) -> OffsetDeleteResponse {
        let id = r.group_id.0.to_string();
        let subscribed: Result<BTreeSet<String>, ResponseError> = self.serves(&id).and_then(|()| match self.groups.get(&id) {
            None if self.offsets.contains_key(&id) => Ok(BTreeSet::new()),
            None => Err(GroupIdNotFound),
            Some(g) if g.is_empty() => Ok(BTreeSet::new()),
            Some(Group::Classic(g)) => g.subscribed_topics().ok_or(NonEmptyGroup),
            Some(Group::Consumer(g)) => Ok(g.subscribed_topics(topics)),
        });
        let subscribed = match subscribed {
            Ok(s) => s,
            Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
        };
        let mut delete = Vec::new();
        let out = r
            .topics
            .into_iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let error = if !topics.contains_key(&name) {
                            UnknownTopicOrPartition.code()
                        } else if subscribed.contains(&name) {
                            GroupSubscribedToTopic.code()
                        } else {
                            delete.push((name.clone(), p.partition_index));
                            0
                        };
                        OffsetDeleteResponsePartition::default().with_partition_index(p.partition_index).with_error_code(error)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default().with_name(t.name).with_partitions(parts)
            })
            .collect();
        self.delete_offsets(&id, &delete, now);
        self.note_emptiness(&id, now);
        OffsetDeleteResponse::default().with_topics(out)
    }

    pub fn list_groups(&self, r: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = r.states_filter.iter().map(|s| s.to_lowercase()).collect();
        let types: Vec<String> = r.types_filter.iter().map(|s| s.to_lowercase()).collect();
        let groups = self
            .groups
            .iter()
            .filter(|(_, g)| states.is_empty() || states.contains(&g.state_name().to_lowercase()))
            .filter(|(_, g)| types.is_empty() || types.contains(&g.type_name().to_string()))
            .map(|(id, g)| {
                let mut l = ListedGroup::default().with_group_id(GroupId(text(id.clone()))).with_protocol_type(text(g.protocol_type()));
                if version >= 4 {
                    l.group_state = text(g.state_name());
                }
                if version >= 5 {
                    l.group_type = text(g.type_name());
                }
                l
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    pub fn describe_groups(&self, ids: Vec<GroupId>, include_operations: bool, version: i16) -> Vec<DescribedGroup> {
        ids.into_iter()
            .map(|id| {
                let name = id.0.to_string();
                let mut d = DescribedGroup::default().with_group_id(id);
                if include_operations && version >= 3 {
                    d.authorized_operations = GROUP_OPERATIONS;
                }
                match self.groups.get(&name) {
                    _ if self.serves(&name).is_err() => {
                        d.error_code = super::code(self.serves(&name));
                        d.group_state = text("Dead");
                    }
                    Some(Group::Classic(g)) => {
                        d.group_state = text(g.state.name());
                        d.protocol_type = text(g.protocol_type.clone().unwrap_or_default());
                        let stable = g.state == ClassicState::Stable;
                        d.protocol_data = text(if stable { g.protocol.clone().unwrap_or_default() } else { String::new() });
                        d.members = g
                            .members_summary()
                            .into_iter()
                            .map(|(m, metadata)| {
                                let mut member = DescribedGroupMember::default()
                                    .with_member_id(text(m.id.clone()))
                                    .with_client_id(text(m.client_id.clone()))
                                    .with_client_host(text(m.client_host.clone()));
                                if version >= 4 {
                                    member.group_instance_id = m.instance_id.clone().map(text);
                                }
                                if stable {
                                    member.member_metadata = metadata;
                                    member.member_assignment = m.assignment.clone();
                                }
                                member
                            })
                            .collect();
                    }
                    Some(Group::Consumer(_)) | None => {
                        // Kafka answers an unknown (or non-classic) group as
                        // Dead; v6 adds the error.
                        d.group_state = text("Dead");
                        if version >= 6 {
                            d.error_code = GroupIdNotFound.code();
                            let why = if self.groups.contains_key(&name) { "is not a classic group" } else { "does not exist" };
                            d.error_message = Some(text(format!("group '{name}' {why}")));
                        }
                    }
                }
                d
            })
            .collect()
    }

    /// DeleteGroups: each empty group goes with its offsets (tombstones in
    /// the writes). Returns each group's error code.
    pub fn delete_groups(&mut self, ids: &[GroupId], now: i64) -> Vec<i16> {
        ids.iter()
            .map(|id| {
                let name = id.0.to_string();
                if let Err(e) = self.serves(&name) {
                    return e.code();
                }
                let exists = self.groups.contains_key(&name) || self.offsets.contains_key(&name);
                if !exists {
                    return GroupIdNotFound.code();
                }
                if self.groups.get(&name).is_some_and(|g| !g.is_empty()) {
                    return NonEmptyGroup.code();
                }
                let offsets = self.offsets.get(&name).map_or(0, |o| o.len());
                self.remove_group(&name, now);
                tracing::info!(group = %name, offsets, "deleted group");
                0
            })
            .collect()
    }
}
