// kafkajs (the Node.js client) against a running broker: produce with its
// idempotent producer, then two group members share the topic and read
// every record exactly once, committing as they go; the group's committed
// offsets end at the end of every partition. Exits non-zero on a mismatch.
// Usage: node group_check.js BOOTSTRAP
'use strict';
const { Kafka, logLevel } = require('kafkajs');

const bootstrap = process.argv[2];
const topic = 'kafkajs-e2e';
const group = 'kafkajs-g';
const PARTITIONS = 4;
const TOTAL = 4000;

function check(ok, what) {
  if (!ok) {
    console.error('FAILED: ' + what);
    process.exit(1);
  }
  console.log('ok: ' + what);
}

async function main() {
  const kafka = new Kafka({ clientId: 'kafkajs-e2e', brokers: [bootstrap], logLevel: logLevel.WARN });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS }], waitForLeaders: true });

  const seen = new Map();
  const perMember = [0, 0];
  const members = [0, 1].map((i) => kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 }));
  const joined = [null, null];
  for (const [i, c] of members.entries()) {
    c.on(c.events.GROUP_JOIN, (e) => {
      const assigned = e.payload.memberAssignment[topic] || [];
      joined[i] = assigned;
    });
    await c.connect();
    await c.subscribe({ topic, fromBeginning: true });
    await c.run({
      autoCommit: false,
      eachBatch: async ({ batch, resolveOffset, heartbeat }) => {
        for (const m of batch.messages) {
          const v = m.value.toString();
          seen.set(v, (seen.get(v) || 0) + 1);
          perMember[i]++;
          resolveOffset(m.offset);
        }
        await c.commitOffsets([{ topic, partition: batch.partition, offset: String(Number(batch.lastOffset()) + 1) }]);
        await heartbeat();
      },
    });
  }
  // Before any record exists: the two members split the partitions.
  const split = () => joined[0] && joined[1] && joined[0].length > 0 && joined[1].length > 0 &&
    new Set([...joined[0], ...joined[1]]).size === PARTITIONS && joined[0].length + joined[1].length === PARTITIONS;
  const joinDeadline = Date.now() + 30000;
  while (!split() && Date.now() < joinDeadline) await new Promise((r) => setTimeout(r, 100));
  check(split(), `the members split the partitions: ${JSON.stringify(joined)}`);

  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  for (let i = 0; i < TOTAL; i += 500) {
    const messages = [];
    for (let j = i; j < i + 500; j++) messages.push({ key: String(j), value: String(j) });
    await producer.send({ topic, acks: -1, messages });
  }
  await producer.disconnect();
  check(true, `produced ${TOTAL} records with the idempotent producer`);

  const deadline = Date.now() + 60000;
  while (seen.size < TOTAL && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  await new Promise((r) => setTimeout(r, 1000));
  const twice = [...seen.values()].filter((n) => n > 1).length;
  check(seen.size === TOTAL && twice === 0, `every record consumed exactly once across two members (${seen.size} distinct, ${twice} twice)`);
  check(perMember[0] > 0 && perMember[1] > 0, `both members got partitions [${perMember}]`);
  for (const c of members) await c.disconnect();

  const offsets = await admin.fetchOffsets({ groupId: group, topics: [topic] });
  const committed = offsets[0].partitions.reduce((s, p) => s + Number(p.offset), 0);
  check(committed === TOTAL, `the group's commits end at the end offsets (${committed})`);

  // A new member resumes from the commits: it reads exactly what came after.
  const MORE = 500;
  const later = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await later.connect();
  const messages = [];
  for (let j = TOTAL; j < TOTAL + MORE; j++) messages.push({ key: String(j), value: String(j) });
  await later.send({ topic, acks: -1, messages });
  await later.disconnect();
  const resumed = [];
  const third = kafka.consumer({ groupId: group, sessionTimeout: 10000, heartbeatInterval: 500 });
  await third.connect();
  await third.subscribe({ topic, fromBeginning: true });
  await third.run({ autoCommit: true, eachMessage: async ({ message }) => { resumed.push([message.key.toString(), message.value.toString()]); } });
  const resumeDeadline = Date.now() + 30000;
  while (resumed.length < MORE && Date.now() < resumeDeadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000));
  await third.disconnect();
  const distinct = new Set(resumed.map(([, v]) => v));
  const bad = resumed.filter(([k, v]) => k !== v || Number(v) < TOTAL || Number(v) >= TOTAL + MORE).length;
  check(resumed.length === MORE && distinct.size === MORE && bad === 0,
    `a new member resumed from the commits: read ${resumed.length} records, ${distinct.size} distinct, ${bad} not among the ${MORE} produced after them`);
  const groups = await admin.listGroups();
  check(groups.groups.some((g) => g.groupId === group), 'listGroups lists the group');
  const described = await admin.describeGroups([group]);
  check(described.groups[0].state === 'Empty', `describeGroups after the members left: ${described.groups[0].state}`);
  await admin.deleteGroups([group]);
  check(true, 'deleteGroups');
  await admin.disconnect();
  console.log('kafkajs check passed');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
