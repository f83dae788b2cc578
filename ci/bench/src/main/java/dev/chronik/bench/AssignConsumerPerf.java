package dev.chronik.bench;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Consumer throughput without consumer groups: KafkaConsumer.assign() on
 * every partition of a topic, seekToBeginning, poll until N records have
 * been read (or a bounded timeout passes), and print the rate.
 *
 * Apache Kafka's ConsumerPerformance subscribe()s with a group, which needs
 * FindCoordinator/JoinGroup; this measures the same thing (records and
 * key+value bytes per second) through assign().
 *
 * usage: AssignConsumerPerf BOOTSTRAP TOPIC NUM_RECORDS [TIMEOUT_S] [prop=value ...]
 */
public final class AssignConsumerPerf {
    public static void main(String[] args) {
        if (args.length < 3) {
            System.err.println("usage: AssignConsumerPerf BOOTSTRAP TOPIC NUM_RECORDS [TIMEOUT_S] [prop=value ...]");
            System.exit(2);
        }
        String bootstrap = args[0];
        String topic = args[1];
        long want = Long.parseLong(args[2]);
        long timeoutMs = (args.length > 3 ? Long.parseLong(args[3]) : 300) * 1000L;

        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "chronik-assign-consumer-perf");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        props.put(ConsumerConfig.RECEIVE_BUFFER_CONFIG, Integer.toString(2 * 1024 * 1024));
        for (int i = 4; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("bad property (want name=value): " + args[i]);
                System.exit(2);
            }
            props.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }

        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            List<TopicPartition> tps = new ArrayList<>();
            consumer.partitionsFor(topic, Duration.ofSeconds(30))
                    .forEach(p -> tps.add(new TopicPartition(topic, p.partition())));
            if (tps.isEmpty()) {
                System.err.println("topic " + topic + " has no partitions");
                System.exit(1);
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);

            long records = 0;
            long bytes = 0;
            long start = System.nanoTime();
            long firstAt = -1;
            long deadline = start + timeoutMs * 1_000_000L;
            while (records < want && System.nanoTime() < deadline) {
                ConsumerRecords<byte[], byte[]> batch = consumer.poll(Duration.ofMillis(500));
                if (!batch.isEmpty() && firstAt < 0) {
                    firstAt = System.nanoTime();
                }
                for (ConsumerRecord<byte[], byte[]> r : batch) {
                    records++;
                    if (r.key() != null) {
                        bytes += r.key().length;
                    }
                    if (r.value() != null) {
                        bytes += r.value().length;
                    }
                }
            }
            long end = System.nanoTime();
            double secs = (end - start) / 1e9;
            double mb = bytes / (1024.0 * 1024.0);
            System.out.printf("%d records consumed, %.1f records/sec (%.2f MB/sec), %.3f s total, %.3f s to first record%n",
                    records, records / secs, mb / secs, secs, firstAt < 0 ? -1.0 : (firstAt - start) / 1e9);
            if (records < want) {
                System.err.printf("only %d of %d records read within %d s%n", records, want, timeoutMs / 1000);
                System.exit(1);
            }
        }
    }
}
