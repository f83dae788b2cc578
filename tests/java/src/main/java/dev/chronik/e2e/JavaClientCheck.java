package dev.chronik.e2e;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.*;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java client with its defaults (idempotence on, acks=all) against a
 * running broker: admin, every codec, every acknowledged record read back
 * byte-identical at its offset. Exits non-zero on the first mismatch.
 * Usage: JavaClientCheck BOOTSTRAP
 */
public final class JavaClientCheck {
    static final int PARTITIONS = 3;
    static final int PER_CODEC = 20_000;

    static void check(boolean ok, String what) {
        if (!ok) throw new AssertionError(what);
        System.out.println("ok: " + what);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = "java-e2e";
        Properties base = new Properties();
        base.put("bootstrap.servers", bootstrap);

        try (Admin admin = Admin.create(base)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
            try {
                admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all().get();
                check(false, "creating an existing topic fails");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException, "creating an existing topic: TopicExistsException");
            }
            try {
                admin.createTopics(List.of(new NewTopic("bad/name", 1, (short) 1))).all().get();
                check(false, "an invalid topic name fails");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidTopicException, "invalid topic name: InvalidTopicException");
            }
            DescribeClusterResult cluster = admin.describeCluster();
            check(cluster.nodes().get().size() == 1 && cluster.clusterId().get() != null, "describeCluster: one node and a cluster id");
            TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
            check(d.partitions().size() == PARTITIONS && d.partitions().get(0).isr().size() == 1, "describeTopics: partitions, leader, ISR");
            Config c = admin.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.TOPIC, topic))).all().get().values().iterator().next();
            check(c.get("retention.ms") != null && c.get("cleanup.policy").value().equals("delete"), "describeConfigs on a topic");
            Config b = admin.describeConfigs(List.of(new ConfigResource(ConfigResource.Type.BROKER, "1"))).all().get().values().iterator().next();
            check(b.get("message.max.bytes") != null, "describeConfigs on the broker");
        }

        // Produce with each codec, client defaults otherwise (idempotent, acks=all).
        Map<String, long[]> acked = new HashMap<>(); // value -> {partition, offset}
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            Properties p = (Properties) base.clone();
            p.put("compression.type", codec);
            p.put("key.serializer", ByteArraySerializer.class.getName());
            p.put("value.serializer", ByteArraySerializer.class.getName());
            try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                List<String> values = new ArrayList<>();
                List<java.util.concurrent.Future<RecordMetadata>> futures = new ArrayList<>();
                for (int i = 0; i < PER_CODEC; i++) {
                    String v = codec + "-" + i + "-" + "x".repeat(i % 50);
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, i % PARTITIONS, ("k" + i).getBytes(StandardCharsets.UTF_8), v.getBytes(StandardCharsets.UTF_8));
                    r.headers().add(new RecordHeader("codec", codec.getBytes(StandardCharsets.UTF_8)));
                    values.add(v);
                    futures.add(producer.send(r));
                }
                producer.flush();
                for (int i = 0; i < futures.size(); i++) {
                    RecordMetadata m = futures.get(i).get();
                    acked.put(values.get(i), new long[] {m.partition(), m.offset()});
                }
            }
        }
        check(acked.size() == 5 * PER_CODEC, "every record acknowledged with idempotence and acks=all, all five codecs");

        Properties cp = (Properties) base.clone();
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < PARTITIONS; i++) tps.add(new TopicPartition(topic, i));
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Map<String, long[]> seen = new HashMap<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < acked.size() && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(500))) {
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    if (seen.put(v, new long[] {r.partition(), r.offset()}) != null) check(false, "value read twice: " + v);
                    String codec = new String(r.headers().lastHeader("codec").value(), StandardCharsets.UTF_8);
                    if (!v.startsWith(codec + "-")) check(false, "header does not match value " + v);
                }
            }
            check(seen.size() == acked.size(), "every acknowledged record read back exactly once (" + seen.size() + ")");
            for (Map.Entry<String, long[]> e : acked.entrySet()) {
                long[] at = seen.get(e.getKey());
                if (at == null || at[0] != e.getValue()[0] || at[1] != e.getValue()[1]) check(false, "record " + e.getKey() + " not at its acknowledged offset");
            }
            check(true, "every record at its acknowledged partition and offset");
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            long total = ends.values().stream().mapToLong(Long::longValue).sum();
            check(total == acked.size(), "end offsets add up to the records written");
            OffsetAndTimestamp t = consumer.offsetsForTimes(Map.of(tps.get(0), 0L)).get(tps.get(0));
            check(t != null && t.offset() == 0, "offsetsForTimes(0) is the first offset");
        }

        int total = acked.size();
        for (String protocol : List.of("classic", "consumer")) {
            total += groupCheck(base, topic, protocol, total);
        }

        try (Admin admin = Admin.create(base)) {
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(PARTITIONS + 1))).all().get();
            check(admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size() == PARTITIONS + 1, "createPartitions");
            admin.deleteTopics(List.of(topic)).all().get();
            check(!admin.listTopics().names().get().contains(topic), "deleteTopics");
        }
        System.out.println("java client check passed");
    }

    /**
     * Two group members (group.protocol=classic or consumer) share the topic:
     * every record consumed once across them with commitSync after each poll,
     * both get partitions, the group's commits end at the end offsets; then
     * a new member resumes from those commits and reads exactly the records
     * produced after them, and the admin client deletes the group. Returns
     * how many records it added to the topic.
     */
    static int groupCheck(Properties base, String topic, String protocol, int total) throws Exception {
        String group = "java-" + protocol;
        Properties cp = (Properties) base.clone();
        cp.put("key.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("value.deserializer", ByteArrayDeserializer.class.getName());
        cp.put("group.id", group);
        cp.put("group.protocol", protocol);
        cp.put("enable.auto.commit", "false");
        cp.put("auto.offset.reset", "earliest");
        cp.put("max.poll.records", "2000");
        List<KafkaConsumer<byte[], byte[]>> members = List.of(new KafkaConsumer<>(cp), new KafkaConsumer<>(cp));
        Set<String> seen = new HashSet<>();
        int[] perMember = new int[2];
        int commitRetries = 0;
        try {
            for (KafkaConsumer<byte[], byte[]> m : members) {
                // Commit what was processed before giving partitions up, so
                // the next owner starts exactly there.
                m.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                    public void onPartitionsRevoked(Collection<TopicPartition> partitions) { m.commitSync(); }
                    public void onPartitionsAssigned(Collection<TopicPartition> partitions) {}
                });
            }
            long deadline = System.currentTimeMillis() + 120_000;
            while (seen.size() < total && System.currentTimeMillis() < deadline) {
                for (int i = 0; i < 2; i++) {
                    ConsumerRecords<byte[], byte[]> records = members.get(i).poll(Duration.ofMillis(200));
                    for (ConsumerRecord<byte[], byte[]> r : records) {
                        if (!seen.add(new String(r.value(), StandardCharsets.UTF_8))) check(false, protocol + " group: a record consumed twice");
                        perMember[i]++;
                    }
                    if (!records.isEmpty()) {
                        try {
                            members.get(i).commitSync();
                        } catch (CommitFailedException e) {
                            // The member's generation or epoch moved on while it
                            // polled (a rebalance); the revocation listener has
                            // committed what it gave up, the next commit covers the rest.
                            commitRetries++;
                        }
                    }
                }
            }
            check(seen.size() == total, protocol + " group: every record consumed exactly once across two members (" + seen.size() + ")");
            check(perMember[0] > 0 && perMember[1] > 0, protocol + " group: both members got partitions " + Arrays.toString(perMember)
                + " (" + commitRetries + " commits refused during a rebalance)");
            try (Admin admin = Admin.create(base)) {
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                long sum = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
                check(sum == total, protocol + " group: commits end at the end offsets (" + sum + ")");
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                check(d.members().size() == 2, protocol + " group: describeConsumerGroups shows both members (" + d.groupState() + ")");
                Collection<ConsumerGroupListing> listed = admin.listConsumerGroups().all().get();
                check(listed.stream().anyMatch(l -> l.groupId().equals(group)), protocol + " group: listConsumerGroups lists it");
            }
        } finally {
            for (KafkaConsumer<byte[], byte[]> m : members) m.close();
        }

        // A new member resumes from the commits: it reads exactly what came after them.
        int more = 300;
        Properties pp = (Properties) base.clone();
        pp.put("key.serializer", ByteArraySerializer.class.getName());
        pp.put("value.serializer", ByteArraySerializer.class.getName());
        String prefix = "resume-" + protocol + "-";
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            List<java.util.concurrent.Future<RecordMetadata>> futures = new ArrayList<>();
            for (int i = 0; i < more; i++) {
                futures.add(producer.send(new ProducerRecord<>(topic, ("r" + i).getBytes(StandardCharsets.UTF_8), (prefix + i).getBytes(StandardCharsets.UTF_8))));
            }
            for (java.util.concurrent.Future<RecordMetadata> f : futures) f.get();
        }
        try (KafkaConsumer<byte[], byte[]> resumed = new KafkaConsumer<>(cp)) {
            resumed.subscribe(List.of(topic));
            Set<String> later = new HashSet<>();
            int reads = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (later.size() < more && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<byte[], byte[]> r : resumed.poll(Duration.ofMillis(200))) {
                    String v = new String(r.value(), StandardCharsets.UTF_8);
                    if (!v.startsWith(prefix)) check(false, protocol + " group: the resuming member read a record from before the commits: " + v);
                    later.add(v);
                    reads++;
                }
            }
            for (ConsumerRecord<byte[], byte[]> r : resumed.poll(Duration.ofMillis(500))) {
                later.add(new String(r.value(), StandardCharsets.UTF_8));
                reads++;
            }
            check(reads == more && later.size() == more, protocol + " group: a new member resumed from the commits and read exactly the " + more + " later records (" + reads + " reads, " + later.size() + " distinct)");
            resumed.commitSync();
        }
        try (Admin admin = Admin.create(base)) {
            admin.deleteConsumerGroups(List.of(group)).all().get();
            check(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().isEmpty(), protocol + " group: deleted with its offsets");
        }
        return more;
    }
}
