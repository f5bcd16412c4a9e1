package kafkastatus

// entryHeap orders an org's held entries, oldest accepted first (then by
// key, so that every replica evicts the same one).
type entryHeap []*entry

func (h entryHeap) Len() int { return len(h) }
func (h entryHeap) Less(i, j int) bool {
	if c := h[i].at.Compare(h[j].at); c != 0 {
		return c < 0
	}
	return h[i].key < h[j].key
}
func (h entryHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *entryHeap) Push(x any) {
	e := x.(*entry)
	e.idx = len(*h)
	*h = append(*h, e)
}
func (h *entryHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.idx = -1
	return e
}

// orgHeap orders orgs by the bytes they hold, most first.
type orgHeap []*orgView

func (h orgHeap) Len() int           { return len(h) }
func (h orgHeap) Less(i, j int) bool { return h[i].bytes > h[j].bytes }
func (h orgHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx, h[j].idx = i, j
}
func (h *orgHeap) Push(x any) {
	o := x.(*orgView)
	o.idx = len(*h)
	*h = append(*h, o)
}
func (h *orgHeap) Pop() any {
	old := *h
	o := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return o
}
