package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// subscriptionTTL is how long a pull-point subscription lives without a pull.
const subscriptionTTL = 60 * time.Second

func jsonMarshal(v any) ([]byte, error) { return json.MarshalIndent(v, "", "  ") }

// event is one notification raised on a device.
type event struct {
	topic string
	state bool
	at    time.Time
}

// subscription is a WS-BaseNotification pull point.
type subscription struct {
	mu      sync.Mutex
	queue   []event
	expires time.Time
	wake    chan struct{} // closed and replaced when an event arrives
	done    chan struct{}
	once    sync.Once
}

func newSubscription(now time.Time) *subscription {
	return &subscription{expires: now.Add(subscriptionTTL), wake: make(chan struct{}), done: make(chan struct{})}
}

func (s *subscription) close() { s.once.Do(func() { close(s.done) }) }

func (s *subscription) push(e event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) >= maxQueuedEvents {
		s.queue = s.queue[1:] // a real camera drops the oldest too
	}
	s.queue = append(s.queue, e)
	close(s.wake)
	s.wake = make(chan struct{})
}

// pull waits up to wait for events and returns at most limit of them.
func (s *subscription) pull(ctx context.Context, wait time.Duration, limit int) []event {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		s.mu.Lock()
		if len(s.queue) > 0 {
			n := min(limit, len(s.queue))
			out := append([]event(nil), s.queue[:n]...)
			s.queue = s.queue[n:]
			s.mu.Unlock()
			return out
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-t.C:
			return nil
		case <-ctx.Done():
			return nil
		case <-s.done:
			return nil
		}
	}
}

// raise queues an event on every live subscription of the device.
func (d *onvifDevice) raise(topic string, state bool) {
	e := event{topic: topic, state: state, at: d.sim.now().UTC()}
	d.mu.Lock()
	subs := make([]*subscription, 0, len(d.subs))
	for _, s := range d.subs {
		subs = append(subs, s)
	}
	d.mu.Unlock()
	for _, s := range subs {
		s.push(e)
	}
	d.log.Info("event raised", "topic", topic, "state", state, "subscribers", len(subs))
}

func (d *onvifDevice) opCreatePullPoint(base string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("subscription id: %w", err)
	}
	id := hex.EncodeToString(b[:])
	now := d.sim.now().UTC()
	d.mu.Lock()
	for k, s := range d.subs { // expire idle subscriptions
		s.mu.Lock()
		dead := now.After(s.expires)
		s.mu.Unlock()
		if dead {
			s.close()
			delete(d.subs, k)
		}
	}
	if len(d.subs) >= maxSubscriptions {
		d.mu.Unlock()
		return "", &soapFault{status: http.StatusBadRequest, code: "env:Receiver", subcode: "ter:TooManySubscriptions", reason: "too many subscriptions"}
	}
	sub := newSubscription(now)
	d.subs[id] = sub
	d.mu.Unlock()
	return fmt.Sprintf(`<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>%s/onvif/events/subscription/%s</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>%s</wsnt:CurrentTime><wsnt:TerminationTime>%s</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>`,
		esc(base), id, now.Format(time.RFC3339), sub.expires.Format(time.RFC3339)), nil
}

// subscriptionOp serves PullMessages, Renew and Unsubscribe on a subscription.
func (d *onvifDevice) subscriptionOp(ctx context.Context, id string, req *request) (string, error) {
	d.mu.Lock()
	sub := d.subs[id]
	d.mu.Unlock()
	if sub == nil {
		return "", faultSender("ter:InvalidArgVal", "no such subscription")
	}
	now := d.sim.now().UTC()
	switch req.op {
	case "PullMessages":
		var in struct {
			Timeout      string `xml:"PullMessages>Timeout"`
			MessageLimit int    `xml:"PullMessages>MessageLimit"`
		}
		if err := xml.Unmarshal(wrap(req.body), &in); err != nil {
			return "", faultSender("ter:InvalidArgVal", "malformed PullMessages")
		}
		wait, err := parseDuration(in.Timeout)
		if err != nil {
			return "", faultSender("ter:InvalidArgVal", "bad Timeout")
		}
		wait = min(wait, maxPullWait)
		limit := in.MessageLimit
		if limit <= 0 || limit > maxQueuedEvents {
			limit = maxQueuedEvents
		}
		sub.mu.Lock()
		sub.expires = now.Add(subscriptionTTL)
		sub.mu.Unlock()
		evs := sub.pull(ctx, wait, limit)
		now = d.sim.now().UTC()
		var b strings.Builder
		fmt.Fprintf(&b, `<tev:PullMessagesResponse><tev:CurrentTime>%s</tev:CurrentTime><tev:TerminationTime>%s</tev:TerminationTime>`,
			now.Format(time.RFC3339), now.Add(subscriptionTTL).Format(time.RFC3339))
		for _, e := range evs {
			fmt.Fprintf(&b, `<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">%s</wsnt:Topic><wsnt:Message><tt:Message UtcTime="%s" PropertyOperation="Changed"><tt:Source><tt:SimpleItem Name="Source" Value="vsrc0"/></tt:Source><tt:Data><tt:SimpleItem Name="State" Value="%t"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>`,
				e.topic, e.at.Format("2006-01-02T15:04:05.000Z"), e.state)
		}
		b.WriteString(`</tev:PullMessagesResponse>`)
		return b.String(), nil
	case "Renew":
		sub.mu.Lock()
		sub.expires = now.Add(subscriptionTTL)
		sub.mu.Unlock()
		return fmt.Sprintf(`<wsnt:RenewResponse><wsnt:TerminationTime>%s</wsnt:TerminationTime><wsnt:CurrentTime>%s</wsnt:CurrentTime></wsnt:RenewResponse>`,
			now.Add(subscriptionTTL).Format(time.RFC3339), now.Format(time.RFC3339)), nil
	case "Unsubscribe":
		d.mu.Lock()
		delete(d.subs, id)
		d.mu.Unlock()
		sub.close()
		return `<wsnt:UnsubscribeResponse/>`, nil
	case "SetSynchronizationPoint":
		return `<tev:SetSynchronizationPointResponse/>`, nil
	}
	return "", faultSender("ter:ActionNotSupported", "operation not supported on a subscription: "+req.op)
}

// parseDuration reads the xs:duration forms clients send for timeouts
// (PT5S, PT1M, PT0.5S); an empty value means 5 s.
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 5 * time.Second, nil
	}
	rest, ok := strings.CutPrefix(s, "PT")
	if !ok || rest == "" || len(rest) > 32 {
		return 0, fmt.Errorf("duration %q", s)
	}
	var total time.Duration
	for rest != "" {
		i := strings.IndexAny(rest, "HMS")
		if i <= 0 {
			return 0, fmt.Errorf("duration %q", s)
		}
		v, err := strconv.ParseFloat(rest[:i], 64)
		if err != nil || v < 0 || v > 86400 {
			return 0, fmt.Errorf("duration %q", s)
		}
		unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second}[rest[i]]
		total += time.Duration(v * float64(unit))
		rest = rest[i+1:]
	}
	return total, nil
}
