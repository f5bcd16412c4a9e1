package sim

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/nr-bridge/nr-bridge/bridge"
)

// reply is one answer a node owes to a command.
type reply struct {
	n             *node
	topic         string
	correlation   []byte
	contentType   string
	commandType   string
	correlationID string
	receivedAt    time.Time
}

// replyBody is the JSON a node answers with.
type replyBody struct {
	Run           string `json:"run"`
	Org           string `json:"org"`
	Node          string `json:"node"`
	Status        string `json:"status"`
	CommandType   string `json:"command_type,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	ReceivedAt    int64  `json:"received_at"`
	TS            int64  `json:"ts"`
}

// onPublish runs on paho's delivery goroutine for every command: it counts
// the command once per target node on this connection and queues a reply
// for each answering one. It blocks only while the reply queue is full.
func (c *conn) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	targets, broadcast := c.targets(p.Topic)
	if len(targets) == 0 {
		return true, nil
	}
	c.st.commands.Add(uint64(len(targets)))
	var props paho.PublishProperties
	if p.Properties != nil {
		props = *p.Properties
	}
	var cmd struct {
		Type          string `json:"type"`
		CorrelationID string `json:"correlation_id"`
	}
	_ = json.Unmarshal(p.Payload, &cmd) // a command that is not JSON is still answered
	now := time.Now()
	c.replyMu.RLock()
	defer c.replyMu.RUnlock()
	for _, n := range targets {
		if !n.answers || c.repliesDone {
			continue
		}
		topic := "org/" + n.org + "/node/" + n.id + "/reply"
		if !broadcast && props.ResponseTopic != "" && !strings.ContainsAny(props.ResponseTopic, "+#") {
			topic = props.ResponseTopic
		}
		c.replies <- reply{
			n:             n,
			topic:         topic,
			correlation:   props.CorrelationData,
			contentType:   props.ContentType,
			commandType:   cmd.Type,
			correlationID: cmd.CorrelationID,
			receivedAt:    now,
		}
	}
	return true, nil
}

// targets returns the nodes of this connection a command topic addresses:
// one node for org/<org>/node/<node>/cmd, every node of the org on this
// connection for org/<org>/broadcast/cmd.
func (c *conn) targets(topic string) (nodes []*node, broadcast bool) {
	parts := strings.Split(topic, "/")
	switch {
	case len(parts) == 5 && parts[0] == "org" && parts[2] == "node" && parts[4] == "cmd":
		if n, ok := c.byNode[parts[1]+"/"+parts[3]]; ok {
			return []*node{n}, false
		}
	case len(parts) == 4 && parts[0] == "org" && parts[2] == "broadcast" && parts[3] == "cmd":
		return c.byOrg[parts[1]], true
	}
	return nil, false
}

// sendReplies publishes queued replies until the queue is closed. A reply
// carries the command's correlation data and content type, and a msg_id.
func (c *conn) sendReplies() {
	for r := range c.replies {
		body, _ := json.Marshal(replyBody{
			Run: c.cfg.RunID, Org: r.n.org, Node: r.n.id, Status: "ok",
			CommandType: r.commandType, CorrelationID: r.correlationID,
			ReceivedAt: r.receivedAt.UnixNano(), TS: time.Now().UnixNano(),
		})
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		id := c.cfg.RunID + "." + r.n.org + "." + r.n.id + ".reply." + strconv.FormatUint(c.replySeq.Add(1), 10)
		p := &paho.Publish{
			Topic:   r.topic,
			QoS:     c.cfg.QoS,
			Payload: body,
			Properties: &paho.PublishProperties{
				CorrelationData: r.correlation,
				ContentType:     ct,
				User:            paho.UserProperties{{Key: bridge.MsgIDProperty, Value: id}},
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.PublishTimeout)
		_, err := c.cm.Publish(ctx, p)
		cancel()
		if err != nil {
			c.st.replyErrors.Add(1)
			if !errors.Is(err, autopaho.ConnectionDownError) {
				c.warnRateLimited("reply publish failed", "topic", r.topic, "err", err)
			}
			continue
		}
		c.st.replies.Add(1)
	}
}
