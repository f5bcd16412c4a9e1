package kafkastatus

import (
	"container/list"
	"slices"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// view is the bounded in-memory view of the status topic: the statuses
// of the most recently written or read commands, at most maxEntries and
// about maxBytes (the size of the records they came from). The least
// recently used is evicted first, and so is a status untouched for longer
// than the retention. Its owner (Store) holds mu around every call.
type view struct {
	maxEntries int
	maxBytes   int64
	retention  time.Duration

	entries map[string]*entry // by command key
	lru     *list.List        // of *entry, most recent first
	bytes   int64
}

// entry is one command's records.
type entry struct {
	key      string
	cmd      *bridge.CommandStatus  // nil until its command record arrives
	replies  map[string]replyRecord // by node
	rev      uint64                 // bumped by every record applied
	size     int64                  // bytes of the records held
	touched  time.Time              // last record applied
	elem     *list.Element
	watchers map[chan *bridge.CommandStatus]struct{}
}

type replyRecord struct {
	issuedAt time.Time
	reply    bridge.Reply
}

func newView(maxEntries int, maxBytes int64, retention time.Duration) *view {
	return &view{
		maxEntries: maxEntries,
		maxBytes:   maxBytes,
		retention:  retention,
		entries:    map[string]*entry{},
		lru:        list.New(),
	}
}

// get returns the entry of key, creating it when create is set.
func (v *view) get(key string, create bool, now time.Time) *entry {
	e := v.entries[key]
	if e == nil && create {
		e = &entry{key: key, replies: map[string]replyRecord{}, touched: now}
		e.elem = v.lru.PushFront(e)
		v.entries[key] = e
	} else if e != nil {
		v.lru.MoveToFront(e.elem)
	}
	return e
}

// apply adds one record of size bytes, written at ts, and tells the
// entry's watchers.
func (v *view) apply(r *record, size int64, ts, now time.Time) {
	if now.Sub(ts) > v.retention {
		return // older than what the bucket would keep; compaction did not delete it yet
	}
	e := v.get(commandKey(r.Org, r.CorrelationID), true, now)
	switch r.Kind {
	case kindCommand:
		e.cmd = mergeCommand(e.cmd, r.Command)
	case kindReply:
		if _, ok := e.replies[r.Reply.Node]; ok {
			return // a node's first reply wins, as in Tracker
		}
		e.replies[r.Reply.Node] = replyRecord{issuedAt: r.IssuedAt, reply: *r.Reply}
	}
	e.rev++
	e.size += size
	v.bytes += size
	e.touched = now
	if e.cmd != nil && len(e.watchers) > 0 {
		doc := e.doc()
		for ch := range e.watchers {
			bridge.OfferStatus(ch, doc.Clone())
		}
	}
	v.evict(now, e)
}

// doc assembles the status: the command record plus the replies to that
// command, in the order received, within bridge's bounds.
func (e *entry) doc() *bridge.CommandStatus {
	s := e.cmd.Clone()
	s.Replies = nil
	s.RepliedAt = time.Time{}
	rs := make([]bridge.Reply, 0, len(e.replies))
	for _, r := range e.replies {
		if r.issuedAt.Equal(s.IssuedAt) {
			rs = append(rs, r.reply)
		}
	}
	slices.SortFunc(rs, func(a, b bridge.Reply) int {
		if c := a.ReceivedAt.Compare(b.ReceivedAt); c != 0 {
			return c
		}
		return cmpString(a.Node, b.Node)
	})
	for _, r := range rs {
		s.AddReply(r)
	}
	return s
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// evict drops least recently used entries over the bounds, and stale
// ones, but never keep (the entry just written).
func (v *view) evict(now time.Time, keep *entry) {
	for el := v.lru.Back(); el != nil; {
		e := el.Value.(*entry)
		prev := el.Prev()
		over := len(v.entries) > v.maxEntries || v.bytes > v.maxBytes
		stale := now.Sub(e.touched) > v.retention
		if e == keep || !over && !stale {
			if !over {
				return
			}
			el = prev
			continue
		}
		v.remove(e)
		el = prev
	}
}

// remove drops e and closes its watchers' channels.
func (v *view) remove(e *entry) {
	v.lru.Remove(e.elem)
	delete(v.entries, e.key)
	v.bytes -= e.size
	for ch := range e.watchers {
		close(ch)
	}
	e.watchers = nil
}

// watch registers ch on key's entry and sends the current status, if any.
func (v *view) watch(key string, ch chan *bridge.CommandStatus, now time.Time) *entry {
	e := v.get(key, true, now)
	if e.watchers == nil {
		e.watchers = map[chan *bridge.CommandStatus]struct{}{}
	}
	e.watchers[ch] = struct{}{}
	if e.cmd != nil {
		bridge.OfferStatus(ch, e.doc())
	}
	return e
}

// unwatch removes ch from e, closing it, unless eviction did already; an
// entry that only existed for watchers goes too.
func (v *view) unwatch(e *entry, ch chan *bridge.CommandStatus) {
	if _, ok := e.watchers[ch]; !ok {
		return
	}
	delete(e.watchers, ch)
	close(ch)
	if e.cmd == nil && len(e.replies) == 0 && len(e.watchers) == 0 && v.entries[e.key] == e {
		v.remove(e)
	}
}
