package trigger

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// EmailMessage is the rendered command of an email trigger: one message, sent to each address
// of To separately (as Argo does, so recipients do not see each other). The SMTP password stays
// a Secret reference, resolved by the executor.
type EmailMessage struct {
	Host string `json:"host"`
	Port int32  `json:"port"`
	// Username, when set, authenticates with PLAIN (or LOGIN when the server offers only that).
	Username string                 `json:"username,omitempty"`
	Password *api.SecretKeySelector `json:"password,omitempty"`
	From     string                 `json:"from"`
	To       []string               `json:"to"`
	Subject  string                 `json:"subject"`
	Body     string                 `json:"body"`
}

// defaultEmailTimeout bounds one execution: connecting, and sending to every recipient.
const defaultEmailTimeout = 60 * time.Second

func init() {
	Register("email", Spec{
		Summary: "Sends an email through an SMTP server (STARTTLS when offered, TLS on port 465); the password is a Secret reference.",
		Render:  renderEmail,
		Check:   checkEmail,
	}, func(env Env) (Executor, error) {
		return &emailExecutor{secrets: env.Secrets}, nil
	})
}

// checkEmail applies Argo's validation (host is required, port is 0-65535) and checks the
// addresses that are given. Recipients, subject and body may come from trigger-level parameters,
// which a template does not show, so their absence is reported when rendering, as Argo reports
// it when executing.
func checkEmail(t *api.TriggerTemplate) error {
	e := t.Email
	var errs []error
	if e.Host == "" {
		errs = append(errs, errors.New("email.host: missing; expected the SMTP server's host name"))
	}
	if e.Port < 0 || e.Port > 65535 {
		errs = append(errs, fmt.Errorf("email.port: %d; expected 1-65535", e.Port))
	}
	if e.From != "" {
		if _, err := emailAddress("email.from", e.From); err != nil {
			errs = append(errs, err)
		}
	}
	for i, to := range e.To {
		if _, err := emailAddress(fmt.Sprintf("email.to[%d]", i), to); err != nil {
			errs = append(errs, err)
		}
	}
	if e.SMTPPassword != nil && (e.SMTPPassword.Name == "" || e.SMTPPassword.Key == "") {
		errs = append(errs, fmt.Errorf("email.smtpPassword: name %q, key %q; expected both", e.SMTPPassword.Name, e.SMTPPassword.Key))
	}
	errs = append(errs, notifyCheckParameters("email", e.Parameters))
	return errors.Join(errs...)
}

// emailAddress parses one address ("a@example.com" or "A <a@example.com>").
func emailAddress(field, s string) (*mail.Address, error) {
	a, err := mail.ParseAddress(s)
	if err != nil {
		return nil, fmt.Errorf("%s: %q; expected an email address: %v", field, s, err)
	}
	return a, nil
}

func renderEmail(in RenderInput) (json.RawMessage, error) {
	e := *in.Template.Email
	if len(e.Parameters) > 0 {
		doc, err := json.Marshal(e)
		if err != nil {
			return nil, err
		}
		if doc, err = in.Params.Apply(doc, e.Parameters); err != nil {
			return nil, fmt.Errorf("email.parameters: %w", err)
		}
		e = api.EmailTrigger{}
		if err := json.Unmarshal(doc, &e); err != nil {
			return nil, fmt.Errorf("email.parameters: result is not an email trigger: %w", err)
		}
	}
	var errs []error
	if e.Host == "" {
		errs = append(errs, errors.New("email.host: missing; expected the SMTP server's host name"))
	}
	if e.Port <= 0 || e.Port > 65535 {
		errs = append(errs, fmt.Errorf("email.port: %d; expected 1-65535", e.Port))
	}
	if _, err := emailAddress("email.from", e.From); err != nil {
		errs = append(errs, err)
	}
	if len(e.To) == 0 {
		errs = append(errs, errors.New("email.to: empty; expected at least one address"))
	}
	for i, to := range e.To {
		if _, err := emailAddress(fmt.Sprintf("email.to[%d]", i), to); err != nil {
			errs = append(errs, err)
		}
	}
	if e.Subject == "" {
		errs = append(errs, errors.New("email.subject: empty"))
	}
	if e.Body == "" {
		errs = append(errs, errors.New("email.body: empty"))
	}
	if p := e.SMTPPassword; p != nil && (p.Name == "" || p.Key == "") {
		errs = append(errs, fmt.Errorf("email.smtpPassword: name %q, key %q; expected both", p.Name, p.Key))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(EmailMessage{
		Host: e.Host, Port: e.Port, Username: e.Username, Password: e.SMTPPassword,
		From: e.From, To: e.To, Subject: e.Subject, Body: e.Body,
	})
}

type emailExecutor struct {
	secrets secrets.Resolver
	// rootCAs verifies the server's certificate; nil means the system's. Tests set it.
	rootCAs *x509.CertPool
}

// Execute sends the message to each recipient in turn over one SMTP connection. Every copy
// carries a Message-ID derived from the command id, so a copy sent again by a retry has the
// same Message-ID as the first and mail clients can drop it.
func (x *emailExecutor) Execute(ctx context.Context, cmd *Command) error {
	var m EmailMessage
	if err := json.Unmarshal(cmd.Spec, &m); err != nil {
		return fmt.Errorf("email trigger: malformed command %s: %w", cmd.ID, err)
	}
	addr := net.JoinHostPort(m.Host, strconv.Itoa(int(m.Port)))
	from, err := emailAddress("from", m.From)
	if err != nil {
		return fmt.Errorf("email trigger: smtp %s: %w", addr, err)
	}
	password := ""
	if m.Password != nil {
		if password, err = x.secrets.Resolve(m.Password.Name, m.Password.Key); err != nil {
			return fmt.Errorf("email trigger: smtp %s: password: %w", addr, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, defaultEmailTimeout)
	defer cancel()
	if err := x.send(ctx, addr, &m, from, password, emailMessageID(cmd.ID, from)); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("email trigger: smtp %s: %w (%v)", addr, ctx.Err(), err)
		}
		return fmt.Errorf("email trigger: smtp %s: %w", addr, err)
	}
	return nil
}

func (x *emailExecutor) send(ctx context.Context, addr string, m *EmailMessage, from *mail.Address, password, messageID string) error {
	tlsConfig := &tls.Config{ServerName: m.Host, RootCAs: x.rootCAs, MinVersion: tls.VersionTLS12}
	var conn net.Conn
	var err error
	implicitTLS := m.Port == 465 // SMTPS, as Argo's mailer does on that port
	if implicitTLS {
		conn, err = (&tls.Dialer{Config: tlsConfig}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	// net/smtp knows no context: closing the connection ends whatever call is waiting.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	c, err := smtp.NewClient(conn, m.Host)
	if err != nil {
		conn.Close()
		return err
	}
	defer c.Close()
	if !implicitTLS {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(tlsConfig); err != nil {
				return fmt.Errorf("STARTTLS: %w", err)
			}
		}
	}
	if m.Username != "" {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return errors.New("the server offers no AUTH, and a username is set")
		}
		var auth smtp.Auth = smtp.PlainAuth("", m.Username, password, m.Host)
		if offered := strings.Fields(strings.ToUpper(mechs)); !slices.Contains(offered, "PLAIN") && slices.Contains(offered, "LOGIN") {
			auth = &emailLoginAuth{username: m.Username, password: password, host: m.Host}
		}
		if err := c.Auth(auth); err != nil {
			return fmt.Errorf("AUTH as %s: %w", m.Username, err)
		}
	}
	var errs []error
	for _, to := range m.To {
		rcpt, err := emailAddress("to", to)
		if err == nil {
			err = sendOne(c, from, rcpt, emailBytes(m, from, rcpt, messageID, time.Now()))
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			errs = append(errs, fmt.Errorf("to %s: %w", to, err))
			_ = c.Reset()
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return c.Quit()
}

func sendOne(c *smtp.Client, from, to *mail.Address, msg []byte) error {
	if err := c.Mail(from.Address); err != nil {
		return fmt.Errorf("MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to.Address); err != nil {
		return fmt.Errorf("RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	return nil
}

// emailMessageID derives the Message-ID from the command id: the same command gives the same
// Message-ID, whoever sends it and however often.
func emailMessageID(cmdID string, from *mail.Address) string {
	id := cmdID
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			sum := sha256.Sum256([]byte(cmdID))
			id = hex.EncodeToString(sum[:16])
			break
		}
	}
	domain := "kevents"
	if i := strings.LastIndexByte(from.Address, '@'); i >= 0 && i+1 < len(from.Address) {
		domain = from.Address[i+1:]
	}
	return "<" + id + ".kevents@" + domain + ">"
}

// emailBytes formats one message: plain text in UTF-8, quoted-printable, ending with a line
// end. Header values are
// addresses parsed by net/mail and a subject that is Q-encoded when it is not plain ASCII, so
// no value can inject a header.
func emailBytes(m *EmailMessage, from, to *mail.Address, messageID string, date time.Time) []byte {
	var b bytes.Buffer
	for _, h := range [][2]string{
		{"From", from.String()},
		{"To", to.String()},
		{"Subject", mime.QEncoding.Encode("utf-8", m.Subject)},
		{"Date", date.Format(time.RFC1123Z)},
		{"Message-ID", messageID},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
	} {
		emailHeader(&b, h[0], h[1])
	}
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	_, _ = qp.Write([]byte(m.Body))
	_ = qp.Close()
	if !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n") // SMTP data ends with a line end; a body without one gets it
	}
	return b.Bytes()
}

// emailHeader writes one header field, folded at spaces to keep lines short (RFC 5322 2.2.3):
// unfolding gives the value back, and encoded words are separated by spaces.
func emailHeader(b *bytes.Buffer, name, value string) {
	b.WriteString(name + ":")
	n := len(name) + 1
	for i, w := range strings.Split(value, " ") {
		if i > 0 && w != "" && n+1+len(w) > 78 { // never a line of white space only
			b.WriteString("\r\n")
			n = 0
		}
		b.WriteString(" " + w)
		n += 1 + len(w)
	}
	b.WriteString("\r\n")
}

// emailLoginAuth is the LOGIN mechanism, for servers that offer it and not PLAIN (Office 365
// does). Like smtp.PlainAuth it sends credentials only over TLS or to localhost.
type emailLoginAuth struct{ username, password, host string }

func (a *emailLoginAuth) Start(server *smtp.ServerInfo) (string, []byte, error) {
	if !server.TLS && server.Name != "localhost" && server.Name != "127.0.0.1" && server.Name != "::1" {
		return "", nil, errors.New("unencrypted connection")
	}
	if server.Name != a.host {
		return "", nil, errors.New("wrong host name")
	}
	return "LOGIN", nil, nil
}

func (a *emailLoginAuth) Next(fromServer []byte, more bool) ([]byte, error) {
	if !more {
		return nil, nil
	}
	switch strings.ToLower(strings.TrimSpace(string(fromServer))) {
	case "username:", "user name", "username":
		return []byte(a.username), nil
	case "password:", "password":
		return []byte(a.password), nil
	}
	return nil, fmt.Errorf("unexpected LOGIN challenge %q", fromServer)
}
