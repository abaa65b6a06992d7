// Package awsconfig builds the AWS configuration of kevents' AWS clients (the sqs source, the
// awsLambda trigger) from Argo's fields: a region, an access key and secret key (and session
// token) as Secret references, and a role to assume.
package awsconfig

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials/stscreds"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/kevents/kevents/api"
	"github.com/kevents/kevents/internal/secrets"
)

// credentialsTTL is how long credentials read from Secrets are used before they are read
// again, so that rotated Secret files are picked up.
const credentialsTTL = 5 * time.Minute

// Options are the AWS fields of a definition.
type Options struct {
	Region string
	// AccessKey and SecretKey (and SessionToken) are Secret references; with AccessKey nil the
	// AWS default chain (environment, shared files, web identity, ECS/EC2 roles) is used.
	AccessKey, SecretKey, SessionToken *api.SecretKeySelector
	// RoleARN, when set, is assumed through STS with the credentials above. Argo ignores
	// accessKey and secretKey when roleARN is set and assumes the role with the default chain.
	RoleARN string
	Secrets secrets.Resolver
	// HTTPClient sends the AWS calls (STS's included); nil means the SDK's default.
	HTTPClient aws.HTTPClient
}

// Load returns the configuration for o. Secrets are resolved once here, so that a missing one
// is reported now, and again every credentialsTTL. Errors name the fields and Secrets, never
// their values.
func Load(ctx context.Context, o Options) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{config.WithRegion(o.Region)}
	if o.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(o.HTTPClient))
	}
	if o.AccessKey != nil {
		p := secretCredentials{res: o.Secrets, accessKey: o.AccessKey, secretKey: o.SecretKey, sessionToken: o.SessionToken}
		if _, err := p.Retrieve(ctx); err != nil {
			return aws.Config{}, err
		}
		opts = append(opts, config.WithCredentialsProvider(aws.NewCredentialsCache(p)))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("aws configuration: %w", err)
	}
	if o.RoleARN != "" {
		cfg.Credentials = aws.NewCredentialsCache(stscreds.NewAssumeRoleProvider(sts.NewFromConfig(cfg), o.RoleARN,
			func(o *stscreds.AssumeRoleOptions) {
				o.RoleSessionName = "kevents-" + strconv.FormatInt(time.Now().UnixNano(), 10)
			}))
	}
	return cfg, nil
}

// secretCredentials reads the access key, secret key and session token from Secrets each time
// the credentials cache asks; the values never leave the AWS client.
type secretCredentials struct {
	res                                secrets.Resolver
	accessKey, secretKey, sessionToken *api.SecretKeySelector
}

func (p secretCredentials) Retrieve(context.Context) (aws.Credentials, error) {
	read := func(field string, sel *api.SecretKeySelector) (string, error) {
		if sel == nil {
			return "", fmt.Errorf("%s: missing; accessKey and secretKey go together", field)
		}
		v, err := p.res.Resolve(sel.Name, sel.Key)
		if err != nil {
			return "", fmt.Errorf("%s: %w", field, err)
		}
		if v == "" {
			return "", fmt.Errorf("%s: secret %s/%s is empty", field, sel.Name, sel.Key)
		}
		return v, nil
	}
	c := aws.Credentials{Source: "kevents secrets", CanExpire: true, Expires: time.Now().Add(credentialsTTL)}
	var err error
	if c.AccessKeyID, err = read("accessKey", p.accessKey); err != nil {
		return aws.Credentials{}, err
	}
	if c.SecretAccessKey, err = read("secretKey", p.secretKey); err != nil {
		return aws.Credentials{}, err
	}
	if p.sessionToken != nil {
		if c.SessionToken, err = read("sessionToken", p.sessionToken); err != nil {
			return aws.Credentials{}, err
		}
	}
	return c, nil
}
