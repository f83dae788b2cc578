package main

import (
	"context"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func franz(bootstrap string) {
	ctx := context.Background()
	topic, group := "franz-e2e", "franz-g"
	admin, err := kgo.NewClient(kgo.SeedBrokers(bootstrap))
	check(err == nil, "client: %v", err)
	adm := kadm.NewClient(admin)
	_, err = adm.CreateTopic(ctx, partitions, 1, nil, topic)
	check(err == nil, "create topic: %v", err)

	// Two members join before any record exists, so both get partitions.
	t := newTally()
	var members []*kgo.Client
	for i := 0; i < 2; i++ {
		c, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
			kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.OnPartitionsRevoked(func(ctx context.Context, cl *kgo.Client, _ map[string][]int32) {
				_ = cl.CommitUncommittedOffsets(ctx) // hand over exactly where we stopped
			}))
		check(err == nil, "member %d: %v", i, err)
		members = append(members, c)
		go func(i int, c *kgo.Client) {
			for {
				fetches := c.PollFetches(ctx)
				if c.Context().Err() != nil || fetches.IsClientClosed() {
					return
				}
				fetches.EachRecord(func(r *kgo.Record) {
					v, _ := strconv.Atoi(string(r.Value))
					t.seen <- [2]int{i, v}
				})
				_ = c.CommitUncommittedOffsets(ctx)
			}
		}(i, c)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		g, err := adm.DescribeGroups(ctx, group)
		if err == nil && g[group].State == "Stable" && len(g[group].Members) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	p, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.RequiredAcks(kgo.AllISRAcks()))
	check(err == nil, "producer: %v", err)
	var records []*kgo.Record
	for i := 0; i < total; i++ {
		records = append(records, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	check(p.ProduceSync(ctx, records...).FirstErr() == nil, "produced %d records (idempotent, acks=all)", total)

	t.wait(60 * time.Second)
	t.verify()
	for _, c := range members {
		c.Close() // commits nothing new; leaves the group
	}
	offsets, err := adm.FetchOffsets(ctx, group)
	check(err == nil, "fetch offsets: %v", err)
	var sum int64
	offsets.Each(func(o kadm.OffsetResponse) { sum += o.At })
	check(sum == total, "the group's commits end at the end offsets (%d)", sum)

	records = records[:0]
	for i := total; i < total+more; i++ {
		records = append(records, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(i)), Value: []byte(strconv.Itoa(i))})
	}
	check(p.ProduceSync(ctx, records...).FirstErr() == nil, "produced %d more records", more)
	p.Close()
	c, err := kgo.NewClient(kgo.SeedBrokers(bootstrap), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	check(err == nil, "resuming member: %v", err)
	var keys, values []string
	pollCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	for len(values) < more && pollCtx.Err() == nil {
		c.PollFetches(pollCtx).EachRecord(func(r *kgo.Record) {
			keys = append(keys, string(r.Key))
			values = append(values, string(r.Value))
		})
	}
	cancel()
	extra, cancel := context.WithTimeout(ctx, time.Second)
	c.PollFetches(extra).EachRecord(func(r *kgo.Record) { keys, values = append(keys, string(r.Key)), append(values, string(r.Value)) })
	cancel()
	verifyResumed(keys, values)
	check(c.CommitUncommittedOffsets(ctx) == nil, "the resuming member commits")
	c.Close()
	listed, err := adm.ListGroups(ctx)
	check(err == nil && listed.Groups() != nil, "list groups: %v", err)
	_, ok := listed[group]
	check(ok, "listGroups lists the group")
	deleted, err := adm.DeleteGroups(ctx, group)
	check(err == nil && deleted[group].Err == nil, "delete group: %v %v", err, deleted[group].Err)
	admin.Close()
}
