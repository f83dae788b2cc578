package main

import (
	"context"
	"strconv"
	"time"

	"github.com/IBM/sarama"
)

type handler struct {
	member int
	t      *tally
}

func (h handler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h handler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h handler) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	n := 0
	for m := range claim.Messages() {
		v, _ := strconv.Atoi(string(m.Value))
		h.t.seen <- [2]int{h.member, v}
		s.MarkMessage(m, "")
		n++
		// Commit (synchronously) every 100 records and whenever caught up.
		if n%100 == 0 || len(claim.Messages()) == 0 {
			s.Commit()
		}
	}
	s.Commit() // the claim ends (a rebalance or shutdown): hand over exactly here
	return nil
}

// resumer is the member that joins after the first two left.
type resumer struct{ got chan [2]string }

func (r *resumer) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (r *resumer) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (r *resumer) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		r.got <- [2]string{string(m.Key), string(m.Value)}
		s.MarkMessage(m, "")
	}
	s.Commit()
	return nil
}

func saramaCheck(bootstrap string) {
	topic, group := "sarama-e2e", "sarama-g"
	cfg := sarama.NewConfig()
	cfg.Version = sarama.V3_6_0_0
	cfg.Producer.Idempotent = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Producer.Return.Successes = true
	cfg.Net.MaxOpenRequests = 1
	cfg.Consumer.Offsets.AutoCommit.Enable = false
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategyRange()}

	admin, err := sarama.NewClusterAdmin([]string{bootstrap}, cfg)
	check(err == nil, "admin: %v", err)
	err = admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
	check(err == nil, "create topic: %v", err)

	t := newTally()
	ctx, cancel := context.WithCancel(context.Background())
	var groups []sarama.ConsumerGroup
	for i := 0; i < 2; i++ {
		g, err := sarama.NewConsumerGroup([]string{bootstrap}, group, cfg)
		check(err == nil, "member %d: %v", i, err)
		groups = append(groups, g)
		go func(i int) {
			for ctx.Err() == nil {
				_ = g.Consume(ctx, []string{topic}, handler{member: i, t: t})
			}
		}(i)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		d, err := admin.DescribeConsumerGroups([]string{group})
		if err == nil && len(d) == 1 && d[0].State == "Stable" && len(d[0].Members) == 2 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	p, err := sarama.NewSyncProducer([]string{bootstrap}, cfg)
	check(err == nil, "producer: %v", err)
	var msgs []*sarama.ProducerMessage
	for i := 0; i < total; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.StringEncoder(strconv.Itoa(i))})
	}
	check(p.SendMessages(msgs) == nil, "produced %d records (idempotent, acks=all)", total)

	t.wait(60 * time.Second)
	t.verify()
	cancel()
	for _, g := range groups {
		g.Close()
	}
	offsets, err := admin.ListConsumerGroupOffsets(group, nil)
	check(err == nil, "list group offsets: %v", err)
	var sum int64
	for _, ps := range offsets.Blocks {
		for _, b := range ps {
			sum += b.Offset
		}
	}
	check(sum == total, "the group's commits end at the end offsets (%d)", sum)

	msgs = msgs[:0]
	for i := total; i < total+more; i++ {
		msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(strconv.Itoa(i)), Value: sarama.StringEncoder(strconv.Itoa(i))})
	}
	check(p.SendMessages(msgs) == nil, "produced %d more records", more)
	p.Close()
	g, err := sarama.NewConsumerGroup([]string{bootstrap}, group, cfg)
	check(err == nil, "resuming member: %v", err)
	r := &resumer{got: make(chan [2]string, total+more)}
	rctx, rcancel := context.WithCancel(context.Background())
	go func() {
		for rctx.Err() == nil {
			_ = g.Consume(rctx, []string{topic}, r)
		}
	}()
	var keys, values []string
	timeout := time.After(30 * time.Second)
	settle := (<-chan time.Time)(nil)
collect:
	for {
		select {
		case kv := <-r.got:
			keys, values = append(keys, kv[0]), append(values, kv[1])
			if len(values) == more && settle == nil {
				settle = time.After(time.Second)
			}
		case <-settle:
			break collect
		case <-timeout:
			break collect
		}
	}
	rcancel()
	g.Close()
	verifyResumed(keys, values)
	listed, err := admin.ListConsumerGroups()
	check(err == nil, "list groups: %v", err)
	_, ok := listed[group]
	check(ok, "listConsumerGroups lists the group")
	check(admin.DeleteConsumerGroup(group) == nil, "delete group")
	admin.Close()
}
