package trigger

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log"
	"math/big"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

const smtpTestPassword = "pw-7f3a-very-secret"

// smtpTestSecrets holds the SMTP password in Secret smtp, key password.
func smtpTestSecrets() secrets.Resolver {
	return secrets.Resolver{LookupEnv: func(name string) (string, bool) {
		if name == secrets.EnvName("smtp", "password") {
			return smtpTestPassword, true
		}
		return "", false
	}}
}

var smtpTestPasswordRef = &api.SecretKeySelector{Name: "smtp", Key: "password"}

// receivedMail is one message the test SMTP server accepted.
type receivedMail struct {
	from     string
	to       []string
	data     []byte
	authUser string // "" when the client did not authenticate
	authPass string
	tls      bool
}

// smtpBackend is a real SMTP server's backend that keeps what it receives.
type smtpBackend struct {
	user, pass string   // required credentials; "" means no authentication needed
	mechs      []string // offered AUTH mechanisms
	refuse     string   // a recipient it refuses
	mails      chan receivedMail
}

func (b *smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return &smtpSession{b: b, conn: c}, nil
}

type smtpSession struct {
	b                  *smtpBackend
	conn               *smtp.Conn
	authUser, authPass string
	from               string
	to                 []string
}

func (s *smtpSession) AuthMechanisms() []string { return s.b.mechs }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(username, password string) error {
		if username != s.b.user || password != s.b.pass {
			return errors.New("invalid username or password")
		}
		s.authUser, s.authPass = username, password
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(_, username, password string) error { return check(username, password) }), nil
	case sasl.Login:
		return &loginServer{check: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error {
	if s.b.user != "" && s.authUser == "" {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}

func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if to == s.b.refuse {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such mailbox"}
	}
	s.to = append(s.to, to)
	return nil
}

func (s *smtpSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.b.mails <- receivedMail{from: s.from, to: s.to, data: data, authUser: s.authUser, authPass: s.authPass, tls: isTLS}
	return nil
}

func (s *smtpSession) Reset()        { s.from, s.to = "", nil }
func (s *smtpSession) Logout() error { return nil }

// loginServer is the server side of AUTH LOGIN, which go-sasl does not provide.
type loginServer struct {
	check    func(username, password string) error
	step     int
	username string
}

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	l.step++
	switch l.step {
	case 1:
		return []byte("Username:"), false, nil
	case 2:
		l.username = string(response)
		return []byte("Password:"), false, nil
	}
	return nil, true, l.check(l.username, string(response))
}

type smtpServerOptions struct {
	user, pass  string
	mechs       []string
	refuse      string
	tls         *tls.Config // offers STARTTLS
	implicitTLS *tls.Config // TLS from the first byte
	listener    net.Listener
}

// startSMTP starts a real SMTP server on 127.0.0.1 and returns its port.
func startSMTP(t *testing.T, o smtpServerOptions) (int32, <-chan receivedMail) {
	t.Helper()
	if o.mechs == nil {
		o.mechs = []string{sasl.Plain}
	}
	be := &smtpBackend{user: o.user, pass: o.pass, mechs: o.mechs, refuse: o.refuse, mails: make(chan receivedMail, 16)}
	s := smtp.NewServer(be)
	s.Domain = "mx.test"
	s.AllowInsecureAuth = o.tls == nil
	s.TLSConfig = o.tls
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	s.ErrorLog = log.New(io.Discard, "", 0)
	l := o.listener
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	if o.implicitTLS != nil {
		l = tls.NewListener(l, o.implicitTLS)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return int32(l.Addr().(*net.TCPAddr).Port), be.mails
}

// testCertificate makes a self-signed certificate for 127.0.0.1 and a pool that trusts it.
func testCertificate(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mx.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func emailExecutorForTest(t *testing.T, env Env, roots *x509.CertPool) Executor {
	t.Helper()
	e, err := types.Lookup("email")
	if err != nil {
		t.Fatal(err)
	}
	x, err := e.New(env)
	if err != nil {
		t.Fatal(err)
	}
	x.(*emailExecutor).rootCAs = roots
	return x
}

func emailCommand(t *testing.T, id string, m EmailMessage) *Command {
	t.Helper()
	spec, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "mail", Type: "email", Spec: spec}
}

func nextMail(t *testing.T, mails <-chan receivedMail) receivedMail {
	t.Helper()
	select {
	case m := <-mails:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("the SMTP server received no message")
		return receivedMail{}
	}
}

// readMail is the message as a mail client shows it.
type readMail struct {
	header  mail.Header
	from    *mail.Address
	to      []*mail.Address
	subject string
	body    string // line ends as \n
}

func parseMail(t *testing.T, data []byte) readMail {
	t.Helper()
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a message: %v:\n%s", err, data)
	}
	var r readMail
	r.header = msg.Header
	if r.from, err = mail.ParseAddress(msg.Header.Get("From")); err != nil {
		t.Errorf("From: %v", err)
	}
	if r.to, err = msg.Header.AddressList("To"); err != nil {
		t.Errorf("To: %v", err)
	}
	if r.subject, err = new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject")); err != nil {
		t.Errorf("Subject: %v", err)
	}
	if ct := msg.Header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	body := io.Reader(msg.Body)
	if msg.Header.Get("Content-Transfer-Encoding") == "quoted-printable" {
		body = quotedprintable.NewReader(msg.Body)
	}
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	r.body = strings.ReplaceAll(string(b), "\r\n", "\n")
	return r
}

func renderEmailForTest(t *testing.T, e *api.EmailTrigger, p Params) (EmailMessage, json.RawMessage, error) {
	t.Helper()
	typ, spec, err := Render(RenderInput{Template: &api.TriggerTemplate{Name: "mail", Email: e}, Params: p})
	if err != nil {
		return EmailMessage{}, nil, err
	}
	if typ != "email" {
		t.Fatalf("Render type = %q; want email", typ)
	}
	var m EmailMessage
	if err := json.Unmarshal(spec, &m); err != nil {
		t.Fatalf("rendered spec is not an EmailMessage: %v: %s", err, spec)
	}
	return m, spec, nil
}

// TestRenderThenExecuteEmail: a template with parameters, rendered in the sensor and executed,
// arrives at a real SMTP server as the mail a user would read, after authentication with the
// password from secrets.
func TestRenderThenExecuteEmail(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{user: "mailer", pass: smtpTestPassword})
	p := fakeParams{values: map[string]string{
		"owner":   "ops@example.com",
		"subject": "Build 42 failed ✗",
		"body":    "Build 42 failed at step test.\nSee https://ci.example.com/builds/42?tab=log&x=1 — ünïcode and a long line " + strings.Repeat("x", 120),
	}}
	_, spec, err := renderEmailForTest(t, &api.EmailTrigger{
		Username: "mailer", SMTPPassword: smtpTestPasswordRef,
		Host: "127.0.0.1", Port: port,
		From: "Kevents CI <ci@kevents.example>", To: []string{"placeholder@example.com"},
		Subject: "placeholder", Body: "placeholder",
		Parameters: []api.TriggerParameter{
			{Src: src("owner"), Dest: "to.0"},
			{Src: src("subject"), Dest: "subject"},
			{Src: src("body"), Dest: "body"},
		},
	}, p)
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	if strings.Contains(string(spec), smtpTestPassword) {
		t.Fatalf("the rendered spec holds the password: %s", spec)
	}
	id := CommandID("ns", "s", "mail", []EventRef{{Dependency: "d", ID: "e1", EventSource: "ci", EventName: "build"}})
	cmd := &Command{ID: id, Namespace: "ns", Sensor: "s", Trigger: "mail", Type: "email", Spec: spec}
	if err := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, nil).Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	got := nextMail(t, mails)
	if got.authUser != "mailer" || got.authPass != smtpTestPassword {
		t.Errorf("authenticated as %q with password %q; want mailer and the secret", got.authUser, got.authPass)
	}
	if got.from != "ci@kevents.example" || len(got.to) != 1 || got.to[0] != "ops@example.com" {
		t.Errorf("envelope from %q to %q; want ci@kevents.example to ops@example.com", got.from, got.to)
	}
	m := parseMail(t, got.data)
	if m.from == nil || m.from.Name != "Kevents CI" || m.from.Address != "ci@kevents.example" {
		t.Errorf("From = %v", m.from)
	}
	if len(m.to) != 1 || m.to[0].Address != "ops@example.com" {
		t.Errorf("To = %v", m.to)
	}
	if m.subject != "Build 42 failed ✗" {
		t.Errorf("Subject = %q", m.subject)
	}
	if want := p.values["body"] + "\n"; m.body != want { // SMTP ends the data with a line end
		t.Errorf("body:\n got %q\nwant %q", m.body, want)
	}
	if got, want := m.header.Get("Message-ID"), "<"+id+".kevents@kevents.example>"; got != want {
		t.Errorf("Message-ID = %q; want %q", got, want)
	}
	if _, err := m.header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
}

// TestEmailEachRecipient: like Argo, each recipient gets a copy addressed to them alone; every
// copy carries the Message-ID of the command, and a retry of the command carries it again.
func TestEmailEachRecipient(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{})
	x := emailExecutorForTest(t, Env{}, nil)
	cmd := emailCommand(t, "cmd-77", EmailMessage{
		Host: "127.0.0.1", Port: port, From: "ci@example.com",
		To: []string{"a@example.com", "B <b@example.org>"}, Subject: "s", Body: "b",
	})
	for round := 0; round < 2; round++ {
		if err := x.Execute(context.Background(), cmd); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"a@example.com", "b@example.org"} {
			got := nextMail(t, mails)
			m := parseMail(t, got.data)
			if len(got.to) != 1 || got.to[0] != want || len(m.to) != 1 || m.to[0].Address != want {
				t.Errorf("round %d: envelope to %q, To %v; want only %s", round, got.to, m.to, want)
			}
			if id := m.header.Get("Message-ID"); id != "<cmd-77.kevents@example.com>" {
				t.Errorf("Message-ID %q", id)
			}
			if got.authUser != "" {
				t.Errorf("authenticated without a username")
			}
		}
	}
}

func TestEmailSTARTTLS(t *testing.T) {
	cfg, roots := testCertificate(t)
	// AllowInsecureAuth is off: the server takes credentials only after STARTTLS.
	port, mails := startSMTP(t, smtpServerOptions{user: "mailer", pass: smtpTestPassword, tls: cfg})
	cmd := emailCommand(t, "c", EmailMessage{
		Host: "127.0.0.1", Port: port, Username: "mailer", Password: smtpTestPasswordRef,
		From: "ci@example.com", To: []string{"ops@example.com"}, Subject: "over TLS", Body: "b",
	})
	if err := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, roots).Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	got := nextMail(t, mails)
	if !got.tls || got.authUser != "mailer" {
		t.Errorf("tls %v, user %q; want the message over STARTTLS after authentication", got.tls, got.authUser)
	}

	// A certificate that is not trusted is an error, not a fallback to plain text.
	err := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, nil).Execute(context.Background(), cmd)
	if err == nil || !strings.Contains(err.Error(), "STARTTLS") {
		t.Errorf("untrusted certificate: %v; want a STARTTLS error", err)
	}
}

// TestEmailImplicitTLS: port 465 is SMTP over TLS from the first byte, as in Argo.
func TestEmailImplicitTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:465")
	if err != nil {
		t.Skipf("cannot listen on port 465: %v", err)
	}
	cfg, roots := testCertificate(t)
	port, mails := startSMTP(t, smtpServerOptions{user: "mailer", pass: smtpTestPassword, implicitTLS: cfg, listener: l})
	cmd := emailCommand(t, "c", EmailMessage{
		Host: "127.0.0.1", Port: port, Username: "mailer", Password: smtpTestPasswordRef,
		From: "ci@example.com", To: []string{"ops@example.com"}, Subject: "s", Body: "b",
	})
	if err := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, roots).Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if got := nextMail(t, mails); !got.tls || got.authUser != "mailer" {
		t.Errorf("tls %v, user %q", got.tls, got.authUser)
	}
}

// TestEmailLoginAuth: a server that offers LOGIN and not PLAIN (as Office 365 does).
func TestEmailLoginAuth(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{user: "mailer", pass: smtpTestPassword, mechs: []string{sasl.Login}})
	cmd := emailCommand(t, "c", EmailMessage{
		Host: "127.0.0.1", Port: port, Username: "mailer", Password: smtpTestPasswordRef,
		From: "ci@example.com", To: []string{"ops@example.com"}, Subject: "s", Body: "b",
	})
	if err := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, nil).Execute(context.Background(), cmd); err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if got := nextMail(t, mails); got.authUser != "mailer" || got.authPass != smtpTestPassword {
		t.Errorf("authenticated as %q/%q", got.authUser, got.authPass)
	}
}

func TestEmailErrors(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{user: "mailer", pass: smtpTestPassword, refuse: "gone@example.com"})
	addr := "127.0.0.1:" + strconv.Itoa(int(port))
	x := emailExecutorForTest(t, Env{Secrets: smtpTestSecrets()}, nil)
	msg := EmailMessage{
		Host: "127.0.0.1", Port: port, Username: "mailer", Password: smtpTestPasswordRef,
		From: "ci@example.com", To: []string{"ops@example.com"}, Subject: "s", Body: "b",
	}
	noLeak := func(t *testing.T, err error) {
		t.Helper()
		if err != nil && strings.Contains(err.Error(), smtpTestPassword) {
			t.Errorf("error leaks the password: %v", err)
		}
	}

	t.Run("wrong password", func(t *testing.T) {
		wrong := secrets.Resolver{LookupEnv: func(string) (string, bool) { return "wrong-" + smtpTestPassword, true }}
		err := emailExecutorForTest(t, Env{Secrets: wrong}, nil).Execute(context.Background(), emailCommand(t, "c", msg))
		if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "AUTH as mailer") {
			t.Errorf("Execute = %v; want an AUTH error naming %s", err, addr)
		}
		noLeak(t, err)
	})
	t.Run("no username, server wants one", func(t *testing.T) {
		m := msg
		m.Username, m.Password = "", nil
		err := x.Execute(context.Background(), emailCommand(t, "c", m))
		if err == nil || !strings.Contains(err.Error(), "MAIL FROM") || !strings.Contains(err.Error(), "ops@example.com") {
			t.Errorf("Execute = %v; want the server's refusal", err)
		}
	})
	t.Run("one recipient refused, the others served", func(t *testing.T) {
		m := msg
		m.To = []string{"gone@example.com", "ops@example.com"}
		err := x.Execute(context.Background(), emailCommand(t, "c", m))
		if err == nil || !strings.Contains(err.Error(), "to gone@example.com") || !strings.Contains(err.Error(), "no such mailbox") {
			t.Errorf("Execute = %v; want an error naming the refused recipient", err)
		}
		if got := nextMail(t, mails); len(got.to) != 1 || got.to[0] != "ops@example.com" {
			t.Errorf("delivered to %v; want ops@example.com", got.to)
		}
	})
	t.Run("missing secret", func(t *testing.T) {
		m := msg
		m.Password = &api.SecretKeySelector{Name: "absent", Key: "pw"}
		err := x.Execute(context.Background(), emailCommand(t, "c", m))
		if !errors.Is(err, secrets.ErrNotFound) || !strings.Contains(err.Error(), "absent/pw") || !strings.Contains(err.Error(), addr) {
			t.Errorf("Execute = %v; want ErrNotFound naming the secret and the server", err)
		}
	})
	t.Run("server down", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := l.Addr().(*net.TCPAddr)
		l.Close()
		m := msg
		m.Port = int32(down.Port)
		err = x.Execute(context.Background(), emailCommand(t, "c", m))
		if err == nil || !strings.Contains(err.Error(), "smtp "+down.String()) {
			t.Errorf("Execute = %v; want an error naming %s", err, down)
		}
		noLeak(t, err)
	})
	t.Run("malformed spec", func(t *testing.T) {
		err := x.Execute(context.Background(), &Command{ID: "broken-9", Type: "email", Spec: json.RawMessage(`[]`)})
		if err == nil || !strings.Contains(err.Error(), "broken-9") {
			t.Errorf("Execute = %v; want an error naming the command", err)
		}
	})
}

// TestEmailContext: a server that accepts and then says nothing is given up on when the context
// ends, with an error wrapping the context's.
func TestEmailContext(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	port := l.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = emailExecutorForTest(t, Env{}, nil).Execute(ctx, emailCommand(t, "c", EmailMessage{
		Host: "127.0.0.1", Port: int32(port), From: "a@example.com", To: []string{"b@example.com"}, Subject: "s", Body: "b",
	}))
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "127.0.0.1:"+strconv.Itoa(port)) {
		t.Errorf("Execute = %v; want DeadlineExceeded naming the server", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Execute took %v", d)
	}
}

// TestEmailSubjects: a subject with line breaks stays one header; long subjects, ASCII or not,
// are folded and read back whole.
func TestEmailSubjects(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{})
	x := emailExecutorForTest(t, Env{}, nil)
	for _, subject := range []string{
		strings.TrimSpace(strings.Repeat("deploy of service payments to production ", 30)),
		strings.TrimSpace(strings.Repeat("déploiement ", 80)),
	} {
		err := x.Execute(context.Background(), emailCommand(t, "c", EmailMessage{
			Host: "127.0.0.1", Port: port, From: "a@example.com", To: []string{"b@example.com"}, Subject: subject, Body: "b",
		}))
		if err != nil {
			t.Fatal(err)
		}
		got := nextMail(t, mails)
		for _, line := range strings.Split(string(got.data), "\r\n") {
			if len(line) > 998 {
				t.Errorf("a line of %d characters", len(line))
			}
		}
		if m := parseMail(t, got.data); m.subject != subject {
			t.Errorf("Subject = %q; want %q", m.subject, subject)
		}
	}
}

// TestEmailHeaderInjection: a subject with line breaks stays one header.
func TestEmailHeaderInjection(t *testing.T) {
	port, mails := startSMTP(t, smtpServerOptions{})
	subject := "hello\r\nBcc: evil@example.com"
	err := emailExecutorForTest(t, Env{}, nil).Execute(context.Background(), emailCommand(t, "c", EmailMessage{
		Host: "127.0.0.1", Port: port, From: "a@example.com", To: []string{"b@example.com"}, Subject: subject, Body: ".\n..\nend",
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := nextMail(t, mails)
	m := parseMail(t, got.data)
	if m.header.Get("Bcc") != "" || len(got.to) != 1 {
		t.Errorf("the subject added a header: %v, recipients %v", m.header, got.to)
	}
	if m.subject != subject {
		t.Errorf("Subject = %q; want %q", m.subject, subject)
	}
	if m.body != ".\n..\nend\n" { // dot-stuffing is undone by the server
		t.Errorf("body = %q", m.body)
	}
}

func TestRenderEmailErrors(t *testing.T) {
	base := func() *api.EmailTrigger {
		return &api.EmailTrigger{Host: "smtp.example.com", Port: 587, From: "a@example.com", To: []string{"b@example.com"}, Subject: "s", Body: "b"}
	}
	p := fakeParams{values: map[string]string{"bad": "not an address", "empty": ""}}
	for _, tc := range []struct {
		name    string
		edit    func(*api.EmailTrigger)
		wantErr string
	}{
		{"no host", func(e *api.EmailTrigger) { e.Host = "" }, "email.host: missing"},
		{"port 0", func(e *api.EmailTrigger) { e.Port = 0 }, "email.port: 0"},
		{"no recipients", func(e *api.EmailTrigger) { e.To = nil }, "email.to: empty"},
		{"no subject", func(e *api.EmailTrigger) { e.Subject = "" }, "email.subject: empty"},
		{"no body", func(e *api.EmailTrigger) { e.Body = "" }, "email.body: empty"},
		{"no from", func(e *api.EmailTrigger) { e.From = "" }, `email.from: ""`},
		{"parameter sets a bad recipient", func(e *api.EmailTrigger) {
			e.Parameters = []api.TriggerParameter{{Src: src("bad"), Dest: "to.1"}}
		}, `email.to[1]: "not an address"`},
		{"parameter empties the body", func(e *api.EmailTrigger) {
			e.Parameters = []api.TriggerParameter{{Src: src("empty"), Dest: "body"}}
		}, "email.body: empty"},
		{"parameter that fails", func(e *api.EmailTrigger) {
			e.Parameters = []api.TriggerParameter{{Src: src("fail"), Dest: "body"}}
		}, "email.parameters"},
		{"parameter of the wrong type", func(e *api.EmailTrigger) {
			e.Parameters = []api.TriggerParameter{{Src: src("bad"), Dest: "port"}}
		}, "not an email trigger"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base()
			tc.edit(e)
			if _, _, err := renderEmailForTest(t, e, p); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Render = %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
	m, _, err := renderEmailForTest(t, base(), p)
	if err != nil || m.Host != "smtp.example.com" || m.Port != 587 || m.Password != nil || len(m.To) != 1 {
		t.Errorf("Render = %+v, %v", m, err)
	}
}

func TestCheckEmail(t *testing.T) {
	ok := api.EmailTrigger{Host: "smtp.example.com", Port: 587, Username: "u", SMTPPassword: smtpTestPasswordRef, From: "a@example.com", To: []string{"b@example.com"}}
	if err := Check(&api.TriggerTemplate{Name: "t", Email: &ok}); err != nil {
		t.Errorf("valid email trigger: Check = %v", err)
	}
	// Recipients, subject and body may come from trigger-level parameters, unseen here.
	if err := Check(&api.TriggerTemplate{Name: "t", Email: &api.EmailTrigger{Host: "smtp.example.com", Port: 25}}); err != nil {
		t.Errorf("email trigger with host and port only: Check = %v", err)
	}
	for _, tc := range []struct {
		name    string
		edit    func(*api.EmailTrigger)
		wantErr string
	}{
		{"no host", func(e *api.EmailTrigger) { e.Host = "" }, "email.host: missing"},
		{"port out of range", func(e *api.EmailTrigger) { e.Port = 70000 }, "email.port: 70000"},
		{"bad from", func(e *api.EmailTrigger) { e.From = "ci at example" }, `email.from: "ci at example"`},
		{"bad recipient", func(e *api.EmailTrigger) { e.To = []string{"b@example.com", "nobody"} }, `email.to[1]: "nobody"`},
		{"password without key", func(e *api.EmailTrigger) { e.SMTPPassword = &api.SecretKeySelector{Name: "smtp"} }, `email.smtpPassword: name "smtp", key ""`},
		{"parameter without src", func(e *api.EmailTrigger) { e.Parameters = []api.TriggerParameter{{Dest: "to.0"}} }, "email.parameters[0].src"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := ok
			tc.edit(&e)
			if err := Check(&api.TriggerTemplate{Name: "t", Email: &e}); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Check = %v; want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
