package trigger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// NATSMsgIDHeader carries the command id on NATS messages. It is JetStream's deduplication
// header, so a stream drops a repeat within its duplicate window; core NATS consumers can use it
// as an idempotency key.
const NATSMsgIDHeader = nats.MsgIdHdr // "Nats-Msg-Id"

// defaultNATSTimeout bounds one publish (connect, publish and flush) when the caller's context
// has no earlier deadline.
const defaultNATSTimeout = 30 * time.Second

// NATSRequest is the rendered message of a nats trigger: the trigger's parameters are applied
// and the payload is built. Secrets stay references, resolved by the executor when it connects.
type NATSRequest struct {
	// URL is the server, or a comma-separated list of servers, as nats.Connect takes it.
	URL     string `json:"url"`
	Subject string `json:"subject"`
	// Data is the message payload (Argo's ConstructPayload of the trigger's payload).
	Data []byte `json:"data"`
	// Auth holds secret references only. Basic and token are supported.
	Auth *api.NATSAuth `json:"auth,omitempty"`
}

func init() {
	Register("nats", Spec{
		Summary: "Publishes a payload built from the events to a NATS subject.",
		Render:  renderNATS,
		Check:   checkNATS,
	}, func(env Env) (Executor, error) {
		logger := env.Logger
		if logger == nil {
			logger = slog.Default()
		}
		return &natsExecutor{secrets: env.Secrets, logger: logger, conns: map[string]*natsConn{}}, nil
	})
}

// checkNATS validates a template at load time. A field that a trigger parameter sets is
// checked after rendering instead.
func checkNATS(t *api.TriggerTemplate) error {
	n := t.NATS
	setByParam := func(field string) bool {
		for _, p := range n.Parameters {
			if p.Dest == field || strings.HasPrefix(p.Dest, field+".") {
				return true
			}
		}
		return false
	}
	if err := checkNATSUnsupported(n); err != nil {
		return err
	}
	if !setByParam("auth") {
		if err := checkNATSAuth(n.Auth); err != nil {
			return err
		}
	}
	if !setByParam("url") {
		if err := checkNATSURL(n.URL); err != nil {
			return err
		}
	}
	if !setByParam("subject") {
		if err := checkNATSSubject(n.Subject); err != nil {
			return err
		}
	}
	if len(n.Payload) == 0 && !setByParam("payload") {
		// Argo v1.9.11 fails every execution with "payload parameters are not specified".
		return errors.New("nats.payload: required; the message is built from its parameters")
	}
	return nil
}

func checkNATSUnsupported(n *api.NATSTrigger) error {
	if n.TLS != nil {
		return api.NotSupported("nats trigger field", "tls")
	}
	if n.Auth != nil {
		if n.Auth.NKey != nil {
			return api.NotSupported("nats trigger field", "auth.nkey")
		}
		if n.Auth.Credential != nil {
			return api.NotSupported("nats trigger field", "auth.credential")
		}
	}
	return nil
}

func checkNATSAuth(a *api.NATSAuth) error {
	if a == nil {
		return nil
	}
	n := 0
	for _, set := range []bool{a.Basic != nil, a.Token != nil, a.NKey != nil, a.Credential != nil} {
		if set {
			n++
		}
	}
	if n > 1 {
		return errors.New("nats.auth: set only one of basic, token, nkey and credential")
	}
	if a.Basic != nil {
		if err := a.Basic.Username.Check("nats.auth.basic.username"); err != nil {
			return err
		}
		if err := a.Basic.Password.Check("nats.auth.basic.password"); err != nil {
			return err
		}
	}
	if a.Token != nil {
		if err := a.Token.Check("nats.auth.token"); err != nil {
			return err
		}
	}
	return nil
}

// natsSchemes are the URL schemes nats.go connects to.
var natsSchemes = map[string]bool{"nats": true, "tls": true, "ws": true, "wss": true}

// checkNATSURL accepts what nats.Connect does: servers separated by commas, each host:port or
// a nats, tls, ws or wss URL. Errors name the URL without any user info.
func checkNATSURL(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("nats.url: required; expected nats://host:port")
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		raw := part
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		if err != nil || !natsSchemes[u.Scheme] || u.Hostname() == "" {
			return fmt.Errorf("nats.url: %q; expected nats://host:port (or tls, ws, wss), several separated by commas", redactNATSURL(part))
		}
	}
	return nil
}

// checkNATSSubject accepts a literal subject: tokens separated by dots, no wildcards, no
// whitespace.
func checkNATSSubject(s string) error {
	if s == "" {
		return errors.New("nats.subject: required")
	}
	for _, tok := range strings.Split(s, ".") {
		if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
			return fmt.Errorf("nats.subject: %q; expected a literal subject such as orders.created (no wildcard, empty token or whitespace)", s)
		}
	}
	return nil
}

// redactNATSURL hides the user info of each server of a NATS URL (a user, a password or a
// token may be written there), so that the URL can name the target in errors and logs.
func redactNATSURL(s string) string {
	parts := strings.Split(s, ",")
	for i, part := range parts {
		at := strings.LastIndex(part, "@")
		if at < 0 {
			continue
		}
		start := 0
		if j := strings.Index(part, "://"); j >= 0 && j < at {
			start = j + len("://")
		}
		parts[i] = part[:start] + "redacted" + part[at:]
	}
	return strings.Join(parts, ",")
}

func renderNATS(in RenderInput) (json.RawMessage, error) {
	n := *in.Template.NATS
	if len(n.Parameters) > 0 {
		doc, err := json.Marshal(n)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, n.Parameters); err != nil {
			return nil, fmt.Errorf("nats.parameters: %w", err)
		}
		n = api.NATSTrigger{}
		if err := json.Unmarshal(doc, &n); err != nil {
			return nil, fmt.Errorf("nats.parameters: result is not a nats trigger: %w", err)
		}
	}
	// Parameters may have set any field: check the result as a whole.
	if err := checkNATSUnsupported(&n); err != nil {
		return nil, err
	}
	if err := checkNATSAuth(n.Auth); err != nil {
		return nil, err
	}
	if err := checkNATSURL(n.URL); err != nil {
		return nil, err
	}
	if err := checkNATSSubject(n.Subject); err != nil {
		return nil, err
	}
	if len(n.Payload) == 0 {
		return nil, errors.New("nats.payload: required; the message is built from its parameters")
	}
	data, err := in.Params.Payload(n.Payload)
	if err != nil {
		return nil, fmt.Errorf("nats.payload: %w", err)
	}
	return json.Marshal(NATSRequest{URL: n.URL, Subject: n.Subject, Data: data, Auth: n.Auth})
}

// natsExecutor keeps one connection per (URL, auth), made on first use. nats.go reconnects a
// connection that drops; one that is closed for good is replaced on the next command.
type natsExecutor struct {
	secrets secrets.Resolver
	logger  *slog.Logger

	mu     sync.Mutex
	conns  map[string]*natsConn
	closed bool
}

// natsConn is a connection being made (ready open) or made (nc or err set, ready closed).
type natsConn struct {
	ready chan struct{}
	nc    *nats.Conn
	err   error
}

func (x *natsExecutor) Execute(ctx context.Context, cmd *Command) error {
	var r NATSRequest
	if err := json.Unmarshal(cmd.Spec, &r); err != nil {
		return fmt.Errorf("nats trigger: malformed command %s: %w", cmd.ID, err)
	}
	target := redactNATSURL(r.URL)
	if err := checkNATSSubject(r.Subject); err != nil {
		return fmt.Errorf("nats trigger: command %s for %s: %w", cmd.ID, target, err)
	}
	ctx, cancel := context.WithTimeout(ctx, defaultNATSTimeout)
	defer cancel()
	nc, err := x.conn(ctx, &r)
	if err != nil {
		return fmt.Errorf("nats trigger: connect to %s: %w", target, err)
	}
	msg := nats.NewMsg(r.Subject)
	msg.Data = r.Data
	msg.Header.Set(NATSMsgIDHeader, cmd.ID)
	if err := nc.PublishMsg(msg); err != nil {
		if errors.Is(err, nats.ErrReconnectBufExceeded) {
			// Publishing while reconnecting is refused rather than buffered: a success must
			// mean the server has the message.
			err = fmt.Errorf("not connected (%s): %w", nc.Status(), err)
		}
		return fmt.Errorf("nats trigger: publish to %s on %s: %w", r.Subject, target, err)
	}
	// The server answers a PING after it has processed everything sent before it.
	if err := nc.FlushWithContext(ctx); err != nil {
		if errors.Is(err, nats.ErrConnectionClosed) && !nc.IsClosed() {
			err = fmt.Errorf("connection lost before the server confirmed (%s): %w", nc.Status(), err)
		}
		return fmt.Errorf("nats trigger: flush publish to %s on %s: %w", r.Subject, target, err)
	}
	return nil
}

// conn returns the connection for the request's URL and auth, connecting if there is none
// or the one there is closed. Concurrent callers share one connection attempt.
func (x *natsExecutor) conn(ctx context.Context, r *NATSRequest) (*nats.Conn, error) {
	auth, err := json.Marshal(r.Auth) // secret references, not values
	if err != nil {
		return nil, err
	}
	key := r.URL + "\x00" + string(auth)
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return nil, errors.New("executor closed")
	}
	c := x.conns[key]
	if c != nil {
		select {
		case <-c.ready:
			if c.err != nil || c.nc.IsClosed() {
				c = nil // failed or broken for good: replace it
			}
		default: // being made: wait for it
		}
	}
	if c == nil {
		c = &natsConn{ready: make(chan struct{})}
		x.conns[key] = c
		// Not bound to ctx: waiters with a later deadline share the attempt. nats.go bounds it
		// with its dial timeout per server.
		go x.connect(c, *r)
	}
	x.mu.Unlock()
	select {
	case <-c.ready:
		return c.nc, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (x *natsExecutor) connect(c *natsConn, r NATSRequest) {
	defer close(c.ready)
	target := redactNATSURL(r.URL)
	opts, err := x.authOptions(r.Auth)
	if err != nil {
		c.err = err
		return
	}
	logger := x.logger.With("trigger", "nats", "url", target)
	opts = append(opts,
		nats.Name("kevents executor"),
		// Refuse to publish while reconnecting instead of buffering: a message buffered and
		// sent after Execute gave up would be delivered besides the retry.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				logger.Warn("nats trigger: disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { logger.Info("nats trigger: reconnected") }),
		nats.ClosedHandler(func(nc *nats.Conn) {
			if err := nc.LastError(); err != nil {
				logger.Warn("nats trigger: connection closed", "error", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// Asynchronous errors such as a permissions violation on publish.
			logger.Warn("nats trigger: server error", "error", err)
		}),
	)
	nc, err := nats.Connect(r.URL, opts...)
	if err != nil {
		c.err = err
		return
	}
	c.nc = nc
}

// authOptions resolves the auth secrets into connect options. Errors name secrets, never
// their values.
func (x *natsExecutor) authOptions(a *api.NATSAuth) ([]nats.Option, error) {
	if a == nil {
		return nil, nil
	}
	if err := checkNATSAuth(a); err != nil {
		return nil, err
	}
	resolve := func(s *api.SecretKeySelector) (string, error) { return x.secrets.Resolve(s.Name, s.Key) }
	switch {
	case a.Basic != nil:
		user, err := resolve(a.Basic.Username)
		if err != nil {
			return nil, fmt.Errorf("auth.basic.username: %w", err)
		}
		password, err := resolve(a.Basic.Password)
		if err != nil {
			return nil, fmt.Errorf("auth.basic.password: %w", err)
		}
		return []nats.Option{nats.UserInfo(user, password)}, nil
	case a.Token != nil:
		token, err := resolve(a.Token)
		if err != nil {
			return nil, fmt.Errorf("auth.token: %w", err)
		}
		return []nats.Option{nats.Token(token)}, nil
	case a.NKey != nil:
		return nil, api.NotSupported("nats trigger field", "auth.nkey")
	case a.Credential != nil:
		return nil, api.NotSupported("nats trigger field", "auth.credential")
	}
	return nil, nil
}

// Close closes the executor's connections. Commands executed afterwards fail.
func (x *natsExecutor) Close() error {
	x.mu.Lock()
	x.closed = true
	conns := x.conns
	x.conns = map[string]*natsConn{}
	x.mu.Unlock()
	for _, c := range conns {
		<-c.ready // a connection being made is closed once made; nats.go bounds the wait
		if c.nc != nil {
			c.nc.Close()
		}
	}
	return nil
}
