// Command baseline is the "minimal bridge" nr-bench compares nr-bridge
// against (issue 7): one autopaho connection in the shared subscription with
// manual acknowledgement, JetStream async publishing, and each message acked
// after its PubAck. Nothing else is tuned: paho's default ack interval
// (50 ms) and connection, one goroutine resolving PubAck futures in order.
// It writes events only to NR_EVENTS, with Nats-Msg-Id from msg_id.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

type pending struct {
	fut jetstream.PubAckFuture
	pr  paho.PublishReceived
	msg *nats.Msg
}

func main() {
	mqttURL := flag.String("mqtt", "tcp://127.0.0.1:1883", "broker URL")
	natsURL := flag.String("nats", "nats://127.0.0.1:4222", "NATS URL")
	clientID := flag.String("client-id", "baseline", "MQTT client ID")
	receiveMax := flag.Int("receive-max", 1000, "Receive Maximum sent in CONNECT")
	window := flag.Int("window", 4096, "async publishes awaiting a PubAck at most")
	flag.Parse()
	if err := run(*mqttURL, *natsURL, *clientID, uint16(*receiveMax), *window); err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
}

func run(mqttURL, natsURL, clientID string, receiveMax uint16, window int) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window))
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	_, err = js.CreateOrUpdateStream(sctx, jetstream.StreamConfig{
		Name: "NR_EVENTS", Subjects: []string{"nr.org.*.node.*.events"},
		Storage: jetstream.FileStorage, MaxAge: 168 * time.Hour, Duplicates: 10 * time.Minute,
	})
	cancel()
	if err != nil {
		return err
	}

	// Futures are resolved in publish order by one goroutine, which acks
	// the MQTT message after its PubAck (and re-publishes on an error).
	futures := make(chan pending, window)
	go func() {
		for p := range futures {
			for {
				select {
				case <-p.fut.Ok():
				case err := <-p.fut.Err():
					fmt.Fprintln(os.Stderr, "baseline: publish:", err)
					time.Sleep(100 * time.Millisecond)
					if p.fut, err = js.PublishMsgAsync(p.msg); err != nil {
						continue
					}
					continue
				}
				break
			}
			_ = p.pr.Client.Ack(p.pr.Packet)
		}
	}()

	u, err := url.Parse(mqttURL)
	if err != nil {
		return err
	}
	cfg := autopaho.ClientConfig{
		ServerUrls:            []*url.URL{u},
		KeepAlive:             30,
		SessionExpiryInterval: 600,
		ReconnectBackoff:      autopaho.NewConstantBackoff(time.Second),
		ConnectPacketBuilder: func(c *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if c.Properties == nil {
				c.Properties = &paho.ConnectProperties{}
			}
			c.Properties.ReceiveMaximum = &receiveMax
			return c, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			go func() {
				_, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
					{Topic: "$share/nr-listeners/org/+/node/+/events", QoS: 1},
				}})
				if err != nil {
					fmt.Fprintln(os.Stderr, "baseline: subscribe:", err)
				}
			}()
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   clientID,
			EnableManualAcknowledgment: true,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				p := pr.Packet
				msg := &nats.Msg{Subject: "nr." + strings.ReplaceAll(p.Topic, "/", "."), Data: p.Payload, Header: nats.Header{}}
				if p.Properties != nil {
					if id := p.Properties.User.Get("msg_id"); id != "" {
						msg.Header.Set(jetstream.MsgIDHeader, id)
					}
				}
				for {
					fut, err := js.PublishMsgAsync(msg)
					if err == nil {
						futures <- pending{fut: fut, pr: pr, msg: msg}
						return true, nil
					}
					time.Sleep(100 * time.Millisecond)
				}
			}},
		},
	}
	cm, err := autopaho.NewConnection(ctx, cfg)
	if err != nil {
		return err
	}
	<-ctx.Done()
	dctx, dcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer dcancel()
	_ = cm.Disconnect(dctx)
	return nil
}
