// Go clients against a running chronik broker: franz-go and sarama each
// produce idempotently with acks=all, then two members of one consumer group
// share the topic and read every record exactly once, committing as they
// go; the group's commits must end at the end of every partition.
// Usage: go run . franz|sarama BOOTSTRAP
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

const (
	partitions = 4
	total      = 4000
)

func check(ok bool, what string, args ...any) {
	msg := fmt.Sprintf(what, args...)
	if !ok {
		fmt.Println("FAILED: " + msg)
		os.Exit(1)
	}
	fmt.Println("ok: " + msg)
}

// tally records what the members consumed, safely from several goroutines.
type tally struct {
	seen      chan [2]int // (member, value)
	perMember [2]int
	counts    map[int]int
}

func newTally() *tally { return &tally{seen: make(chan [2]int, 1024), counts: map[int]int{}} }

// wait drains until every value was seen or the deadline passes, then a
// little longer to catch anything read twice.
func (t *tally) wait(deadline time.Duration) {
	timeout := time.After(deadline)
	settle := (<-chan time.Time)(nil)
	for {
		select {
		case s := <-t.seen:
			t.perMember[s[0]]++
			t.counts[s[1]]++
			if len(t.counts) == total && settle == nil {
				settle = time.After(time.Second)
			}
		case <-settle:
			return
		case <-timeout:
			return
		}
	}
}

func (t *tally) verify() {
	twice := 0
	for _, n := range t.counts {
		if n > 1 {
			twice++
		}
	}
	check(len(t.counts) == total && twice == 0, "every record consumed exactly once across two members (%d distinct, %d twice)", len(t.counts), twice)
	check(t.perMember[0] > 0 && t.perMember[1] > 0, "both members got partitions %v", t.perMember)
}

// more is how many records are produced after the first members leave; a
// new member must read exactly those, resuming from the group's commits.
const more = 500

// verifyResumed checks what the resuming member read: exactly the records
// produced after the commits, once each, key and value as sent.
func verifyResumed(keys, values []string) {
	want := map[string]bool{}
	for i := total; i < total+more; i++ {
		want[strconv.Itoa(i)] = true
	}
	bad := 0
	got := map[string]int{}
	for i, v := range values {
		got[v]++
		if !want[v] || keys[i] != v {
			bad++
		}
	}
	check(len(values) == more && len(got) == more && bad == 0,
		"a new member resumed from the commits: read %d records, %d distinct, %d not among the %d produced after them", len(values), len(got), bad, more)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Println("usage: e2e franz|sarama BOOTSTRAP")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "franz":
		franz(os.Args[2])
	case "sarama":
		saramaCheck(os.Args[2])
	default:
		fmt.Println("unknown client " + os.Args[1])
		os.Exit(2)
	}
	fmt.Println(os.Args[1] + " check passed")
}
