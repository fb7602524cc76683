package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protojson"

	"writ.dev/writ/api/webhook"
	"writ.dev/writ/identity"
)

// WebhookConfig is one receiver of signed request events.
type WebhookConfig struct {
	// URL receives each event as a POST of a compact JWS. https only;
	// http is accepted for loopback addresses (a receiver on the same
	// host).
	URL string `yaml:"url"`
	// Events are the change types sent: created, reviewed, approved,
	// denied, cancelled, expired. Empty sends all.
	Events []string `yaml:"events"`
}

const (
	maxWebhooks   = 16
	maxWebhookURL = 2048
	// webhookQueue bounds the events waiting per receiver; beyond it new
	// events are dropped (and counted) rather than held in memory.
	webhookQueue = 1024
	// webhookAttempts bounds deliveries of one event.
	webhookAttempts = 5
	// webhookTimeout bounds one delivery attempt.
	webhookTimeout = 10 * time.Second
)

var webhookEvents = []string{changeCreated, changeReviewed, "approved", "denied", "cancelled", "expired"}

// webhookBackoff is the wait before retry n (1-based): 1s, 2s, 4s, 8s.
// Tests shorten it.
var webhookBackoff = func(n int) time.Duration { return time.Duration(1<<min(n-1, 6)) * time.Second }

func validateWebhooks(hooks []WebhookConfig) []error {
	var errs []error
	if len(hooks) > maxWebhooks {
		return []error{fmt.Errorf("webhooks: %d receivers; at most %d are allowed", len(hooks), maxWebhooks)}
	}
	for i, h := range hooks {
		field := fmt.Sprintf("webhooks[%d]", i)
		if err := checkWebhookURL(h.URL); err != nil {
			errs = append(errs, fmt.Errorf("%s.url: %v", field, err))
		}
		for j, e := range h.Events {
			if !slices.Contains(webhookEvents, e) {
				errs = append(errs, fmt.Errorf("%s.events[%d]: %s is not an event: use %s", field, j, identity.Quote(e), strings.Join(webhookEvents, ", ")))
			} else if slices.Contains(h.Events[:j], e) {
				errs = append(errs, fmt.Errorf("%s.events[%d]: %s is listed twice", field, j, e))
			}
		}
	}
	return errs
}

func checkWebhookURL(raw string) error {
	if raw == "" {
		return errors.New("is required: give the receiver's https URL")
	}
	if len(raw) > maxWebhookURL {
		return fmt.Errorf("is %d bytes; at most %d are allowed", len(raw), maxWebhookURL)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%s is not an absolute URL: give https://HOST/PATH", identity.Quote(raw))
	}
	if u.User != nil {
		return errors.New("carries credentials: deliveries are signed, so a receiver needs no secret in the URL; remove them")
	}
	if u.Fragment != "" {
		return errors.New("has a fragment, which is never sent: remove it")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip := net.ParseIP(u.Hostname()); (ip != nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("%s is plain http to a remote host: use https (http is for loopback receivers only)", identity.Quote(u.Host))
	default:
		return fmt.Errorf("scheme %s is not supported: use https", identity.Quote(u.Scheme))
	}
}

// webhookSender signs request events with the server's X.509-SVID (see
// api/webhook) and delivers them to each receiver from its own queue and
// goroutine, so a slow receiver delays only itself and never the request
// path.
type webhookSender struct {
	s       *Server
	signer  *webhook.Signer
	client  *http.Client
	targets []*webhookTarget
	backoff func(n int) time.Duration
	dropped *prometheus.CounterVec
	failed  *prometheus.CounterVec
}

type webhookTarget struct {
	cfg   WebhookConfig
	queue chan webhook.Event
}

// loadWebhooks readies the sender; s.tlsID must exist, and Start keeps the
// SVID it signs with current.
func (s *Server) loadWebhooks() {
	w := &webhookSender{s: s, signer: webhook.NewSigner(s.tlsID),
		client: &http.Client{
			Timeout: webhookTimeout,
			// A redirect could send the event somewhere not configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		backoff: webhookBackoff,
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_webhook_events_dropped_total",
			Help: "Request events not delivered because the receiver's queue was full, by receiver index.",
		}, []string{"webhook"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "writ_webhook_deliveries_failed_total",
			Help: "Request events given up on after every attempt failed, by receiver index.",
		}, []string{"webhook"}),
	}
	for _, h := range s.cfg.Webhooks {
		w.targets = append(w.targets, &webhookTarget{cfg: h, queue: make(chan webhook.Event, webhookQueue)})
	}
	s.metrics.reg.MustRegister(w.dropped, w.failed)
	s.webhooks = w
}

func (w *webhookSender) run(ctx context.Context) {
	for i, t := range w.targets {
		w.s.background(ctx, func(ctx context.Context) { w.deliverAll(ctx, i, t) })
	}
}

// enqueue hands an event to every receiver that wants its type, never
// waiting: a full queue drops the event.
func (w *webhookSender) enqueue(sr storedRequest, typ string) {
	if len(w.targets) == 0 {
		return
	}
	req, err := protojson.Marshal(requestToProto(sr))
	if err != nil {
		w.s.log.Error("webhook: encode request", "id", sr.r.ID, "err", err)
		return
	}
	ev := webhook.Event{ID: "E-" + rand.Text()[:generatedIDChars], Type: typ, ServerID: w.s.serverID, Revision: sr.revision, Request: req}
	for i, t := range w.targets {
		if len(t.cfg.Events) > 0 && !slices.Contains(t.cfg.Events, typ) {
			continue
		}
		select {
		case t.queue <- ev:
		default:
			w.dropped.WithLabelValues(fmt.Sprint(i)).Inc()
			w.s.log.Warn("webhook queue full; event dropped", "webhook", i, "event", ev.ID, "type", typ, "request", sr.r.ID)
		}
	}
}

func (w *webhookSender) deliverAll(ctx context.Context, i int, t *webhookTarget) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-t.queue:
			if err := w.deliver(ctx, t, ev); err != nil && ctx.Err() == nil {
				w.failed.WithLabelValues(fmt.Sprint(i)).Inc()
				w.s.log.Warn("webhook delivery failed; event given up", "webhook", i, "event", ev.ID, "type", ev.Type, "err", err)
			}
		}
	}
}

// deliver signs ev afresh per attempt, so each is valid for
// webhook.Lifetime from when it is sent and names this receiver, and posts it
// until a 2xx, a refusal no retry will change (a 4xx other than 408 and
// 429), or the attempts run out.
func (w *webhookSender) deliver(ctx context.Context, t *webhookTarget, ev webhook.Event) error {
	var last error
	for n := 1; n <= webhookAttempts; n++ {
		if n > 1 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(w.backoff(n - 1)):
			}
		}
		jws, err := w.signer.Sign(ev, t.cfg.URL, w.s.now())
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		retry, err := w.post(ctx, t.cfg.URL, ev, jws)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return last
}

func (w *webhookSender) post(ctx context.Context, target string, ev webhook.Event, jws string) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader([]byte(jws)))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", webhook.ContentType)
	req.Header.Set(webhook.EventHeader, ev.Type)
	req.Header.Set(webhook.DeliveryHeader, ev.ID)
	resp, err := w.client.Do(req)
	if err != nil {
		return true, err
	}
	resp.Body.Close()
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == http.StatusRequestTimeout || c == http.StatusTooManyRequests || c >= 500:
		return true, fmt.Errorf("receiver answered %d", c)
	default:
		return false, fmt.Errorf("receiver refused with %d", c)
	}
}
