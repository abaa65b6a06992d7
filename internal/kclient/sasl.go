package kclient

import (
	"context"
	"fmt"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// SASL returns the SASL mechanism (PLAIN when empty, SCRAM-SHA-256, SCRAM-SHA-512) of a user's
// Kafka settings. The user and password are read from their Secrets at every connection, so a
// rotated Secret is picked up, and once now, so that a missing one fails at once. field names
// the settings in errors ("kafka.sasl").
func SASL(r secrets.Resolver, field, mechanism string, c *api.SASLConfig) (sasl.Mechanism, error) {
	creds := func() (string, string, error) {
		user, err := r.Ref(field+".userSecret", c.UserSecret)
		if err != nil {
			return "", "", err
		}
		pass, err := r.Ref(field+".passwordSecret", c.PasswordSecret)
		return user, pass, err
	}
	if _, _, err := creds(); err != nil {
		return nil, err
	}
	scramAuth := func(context.Context) (scram.Auth, error) {
		u, p, err := creds()
		return scram.Auth{User: u, Pass: p}, err
	}
	switch mechanism {
	case "", "PLAIN":
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			u, p, err := creds()
			return plain.Auth{User: u, Pass: p}, err
		}), nil
	case "SCRAM-SHA-256":
		return scram.Sha256(scramAuth), nil
	case "SCRAM-SHA-512":
		return scram.Sha512(scramAuth), nil
	}
	return nil, fmt.Errorf("%s.mechanism: %q; expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", field, mechanism)
}
