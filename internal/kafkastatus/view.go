package kafkastatus

import (
	"container/heap"
	"container/list"
	"slices"
	"time"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// view is the bounded in-memory view of the status topic. Its bounds are
// fair between orgs and give the same view after a restart, whatever
// order the partitions are read in:
//
//   - each org keeps at most maxPerOrg commands, the newest by the time
//     the bridge accepted them (the command's accepted_at; while only its
//     reply records arrived, the accepted_at they carry): an org's
//     commands never evict another org's;
//   - over about maxBytes in all, the org holding the most bytes gives up
//     its oldest commands, and once it holds none its oldest notes of
//     evicted commands, so one org's flood costs only that org (until it
//     holds no more than the others);
//   - a status untouched for longer than the retention goes.
//
// An evicted command leaves a note (its target, issued and accepted
// times; at most maxPerOrg per org, counted in the bytes): Get then
// answers bridge.ErrStatusEvicted instead of "not found", and a reply to
// it is still written to the topic (Store.RecordReply). Its owner (Store)
// holds mu around every call.
type view struct {
	maxPerOrg int
	maxBytes  int64
	retention time.Duration

	entries map[string]*entry // by command key: held, or only watched
	orgs    map[string]*orgView
	big     orgHeap // orgs holding anything, most bytes first
	bytes   int64
}

// orgView is what one org holds.
type orgView struct {
	name  string
	held  entryHeap        // oldest first
	notes map[string]*note // evicted commands by key
	order *list.List       // of *note, evicted first at the front
	bytes int64            // of held records and notes
	idx   int              // in view.big
}

// note is what the view keeps of an evicted command.
type note struct {
	key string
	// known is false for a command evicted before its command record
	// arrived: its target is unknown.
	known     bool
	node      string
	broadcast bool
	issuedAt  time.Time
	at        time.Time // accepted
	final     bool      // replied, expired or failed, as far as known
	replied   bool
	elem      *list.Element
}

// noteSize is what a note counts as in the bytes, plus its key.
const noteSize = 160

// entry is one command's records.
type entry struct {
	key, org string
	cmd      *bridge.CommandStatus  // nil until its command record arrives
	replies  map[string]replyRecord // by node
	rev      uint64                 // bumped by every record applied
	size     int64                  // bytes of the records held
	at       time.Time              // when the command was accepted: the eviction order
	touched  time.Time              // last record applied
	idx      int                    // in its org's held heap; -1 while only watched
	watchers map[chan *bridge.CommandStatus]struct{}
}

type replyRecord struct {
	issuedAt time.Time // zero: written for an evicted command, matches any
	reply    bridge.Reply
}

func newView(maxPerOrg int, maxBytes int64, retention time.Duration) *view {
	return &view{
		maxPerOrg: maxPerOrg,
		maxBytes:  maxBytes,
		retention: retention,
		entries:   map[string]*entry{},
		orgs:      map[string]*orgView{},
	}
}

// held returns the entry of key holding at least one record and not
// stale, or nil. A stale one is evicted.
func (v *view) held(key string, now time.Time) *entry {
	e := v.entries[key]
	if e == nil || e.idx < 0 {
		return nil
	}
	if now.Sub(e.touched) > v.retention {
		v.evict(e, false)
		return nil
	}
	return e
}

// evicted returns the note of key's evicted command, or nil.
func (v *view) evicted(org, key string) *note {
	if o := v.orgs[org]; o != nil {
		return o.notes[key]
	}
	return nil
}

func (v *view) orgOf(name string) *orgView {
	o := v.orgs[name]
	if o == nil {
		o = &orgView{name: name, notes: map[string]*note{}, order: list.New()}
		v.orgs[name] = o
		heap.Push(&v.big, o)
	}
	return o
}

// grow adds n bytes to o (n may be negative) and drops an org left empty.
func (v *view) grow(o *orgView, n int64) {
	o.bytes += n
	v.bytes += n
	if o.held.Len() == 0 && len(o.notes) == 0 {
		heap.Remove(&v.big, o.idx)
		delete(v.orgs, o.name)
		return
	}
	heap.Fix(&v.big, o.idx)
}

// apply adds one record of size bytes, written at ts, and tells the
// entry's watchers.
func (v *view) apply(r *record, size int64, ts, now time.Time) {
	if now.Sub(ts) > v.retention {
		return // older than what the topic keeps; compaction did not delete it yet
	}
	key := commandKey(r.Org, r.CorrelationID)
	e := v.entries[key]
	if e == nil || e.idx < 0 {
		if n := v.evicted(r.Org, key); n != nil {
			if n.takes(r) {
				return
			}
			v.dropNote(v.orgs[r.Org], n) // a later command with this correlation ID
		}
	}
	if e == nil {
		e = &entry{key: key, org: r.Org, replies: map[string]replyRecord{}, idx: -1}
		v.entries[key] = e
	}
	switch r.Kind {
	case kindCommand:
		e.cmd = mergeCommand(e.cmd, r.Command)
	case kindReply:
		if _, ok := e.replies[r.Reply.Node]; ok {
			return // a node's first reply wins, as in Tracker
		}
		e.replies[r.Reply.Node] = replyRecord{issuedAt: r.IssuedAt, reply: *r.Reply}
	}
	o := v.orgOf(r.Org)
	e.rev++
	e.size += size
	e.touched = now
	e.at = e.acceptedAt(r, ts)
	if e.idx < 0 {
		heap.Push(&o.held, e)
	} else {
		heap.Fix(&o.held, e.idx)
	}
	v.grow(o, size)
	if e.cmd != nil && len(e.watchers) > 0 {
		doc := e.doc()
		for ch := range e.watchers {
			bridge.OfferStatus(ch, doc.Clone())
		}
	}
	v.enforce(o, now)
}

// acceptedAt is e's place in the eviction order once r is applied: the
// command's accepted_at, else what the reply records say of it, else the
// record's time.
func (e *entry) acceptedAt(r *record, ts time.Time) time.Time {
	switch {
	case e.cmd != nil && !e.cmd.AcceptedAt.IsZero():
		return e.cmd.AcceptedAt
	case e.cmd != nil:
		return e.cmd.IssuedAt
	case !e.at.IsZero():
		return e.at
	case !r.AcceptedAt.IsZero():
		return r.AcceptedAt
	case !r.IssuedAt.IsZero():
		return r.IssuedAt
	}
	return ts
}

// takes applies r to the note of an evicted command and reports whether
// r was about that command (else it is about a later command that reuses
// the correlation ID).
func (n *note) takes(r *record) bool {
	switch r.Kind {
	case kindCommand:
		// Records of one key arrive in the order written: a command
		// record of another command is a later one.
		c := r.Command
		if n.known && (c.Node != n.node || !c.IssuedAt.Equal(n.issuedAt)) ||
			!n.known && !n.issuedAt.IsZero() && !c.IssuedAt.Equal(n.issuedAt) {
			return false
		}
		n.known, n.node, n.broadcast, n.issuedAt = true, c.Node, c.Broadcast, c.IssuedAt
		n.final = n.final || !c.ExpiredAt.IsZero() || !c.FailedAt.IsZero()
		return true
	case kindReply:
		if !r.IssuedAt.IsZero() && !n.issuedAt.IsZero() && r.IssuedAt.After(n.issuedAt) {
			return false
		}
		n.final, n.replied = true, true
		return true
	}
	return true
}

// enforce applies the bounds after o grew.
func (v *view) enforce(o *orgView, now time.Time) {
	for o.held.Len() > v.maxPerOrg {
		v.evict(o.held[0], true)
	}
	if o.held.Len() > 0 && now.Sub(o.held[0].touched) > v.retention {
		v.evict(o.held[0], false)
	}
	for v.bytes > v.maxBytes && v.big.Len() > 0 {
		big := v.big[0]
		switch {
		case big.held.Len() > 0:
			v.evict(big.held[0], true)
		case big.order.Len() > 0:
			v.dropNote(big, big.order.Front().Value.(*note))
		default:
			return // nothing left to give up
		}
	}
}

// evict drops e, leaving a note when withNote is set, and closes its
// watchers' channels.
func (v *view) evict(e *entry, withNote bool) {
	o := v.orgs[e.org]
	heap.Remove(&o.held, e.idx)
	e.idx = -1
	delete(v.entries, e.key)
	for ch := range e.watchers {
		close(ch)
	}
	e.watchers = nil
	if withNote {
		n := &note{key: e.key, at: e.at}
		if c := e.cmd; c != nil {
			n.known, n.node, n.broadcast, n.issuedAt = true, c.Node, c.Broadcast, c.IssuedAt
			n.final = !c.ExpiredAt.IsZero() || !c.FailedAt.IsZero()
		} else {
			for _, r := range e.replies {
				n.issuedAt = r.issuedAt
			}
		}
		n.replied = len(e.replies) > 0
		n.final = n.final || n.replied
		n.elem = o.order.PushBack(n)
		o.notes[e.key] = n
		v.grow(o, noteSize+int64(len(e.key))-e.size)
		for o.order.Len() > v.maxPerOrg {
			v.dropNote(o, o.order.Front().Value.(*note))
		}
		return
	}
	v.grow(o, -e.size)
}

func (v *view) dropNote(o *orgView, n *note) {
	o.order.Remove(n.elem)
	delete(o.notes, n.key)
	v.grow(o, -(noteSize + int64(len(n.key))))
}

// doc assembles the status: the command record plus the replies to that
// command (from its target node, or any for a broadcast), in the order
// received, within bridge's bounds.
func (e *entry) doc() *bridge.CommandStatus {
	s := e.cmd.Clone()
	s.Replies = nil
	s.RepliedAt = time.Time{}
	rs := make([]bridge.Reply, 0, len(e.replies))
	for _, r := range e.replies {
		if (r.issuedAt.IsZero() || r.issuedAt.Equal(s.IssuedAt)) && (s.Broadcast || r.reply.Node == s.Node) {
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

// watch registers ch on key's entry and sends the current status, if any.
// An evicted command's channel is closed at once: it will not change
// here.
func (v *view) watch(org, key string, ch chan *bridge.CommandStatus) *entry {
	e := v.entries[key]
	if e == nil {
		if v.evicted(org, key) != nil {
			close(ch)
			return nil
		}
		e = &entry{key: key, org: org, replies: map[string]replyRecord{}, idx: -1}
		v.entries[key] = e
	}
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
	if e == nil {
		return
	}
	if _, ok := e.watchers[ch]; !ok {
		return
	}
	delete(e.watchers, ch)
	close(ch)
	if e.idx < 0 && len(e.watchers) == 0 && v.entries[e.key] == e {
		delete(v.entries, e.key)
	}
}
