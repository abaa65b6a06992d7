package api

// WebhookContext is the HTTP endpoint a webhook-based source (github, gitlab, ...) listens on.
type WebhookContext struct {
	Endpoint         string             `json:"endpoint"`
	Method           string             `json:"method"`
	Port             string             `json:"port"`
	URL              string             `json:"url,omitempty"`
	ServerCertSecret *SecretKeySelector `json:"serverCertSecret,omitempty"`
	ServerKeySecret  *SecretKeySelector `json:"serverKeySecret,omitempty"`
	Metadata         map[string]string  `json:"metadata,omitempty"`
	AuthSecret       *SecretKeySelector `json:"authSecret,omitempty"`
	MaxPayloadSize   *int64             `json:"maxPayloadSize,omitempty"`
}

// GithubEventSource receives GitHub webhook deliveries.
type GithubEventSource struct {
	ID                   int64               `json:"id,omitempty"`
	Webhook              *WebhookContext     `json:"webhook,omitempty"`
	DeprecatedOwner      string              `json:"owner,omitempty"`
	DeprecatedRepository string              `json:"repository,omitempty"`
	Events               []string            `json:"events"`
	APIToken             *SecretKeySelector  `json:"apiToken,omitempty"`
	WebhookSecret        *SecretKeySelector  `json:"webhookSecret,omitempty"`
	Insecure             bool                `json:"insecure,omitempty"`
	Active               bool                `json:"active,omitempty"`
	ContentType          string              `json:"contentType,omitempty"`
	GithubBaseURL        string              `json:"githubBaseURL,omitempty"`
	GithubUploadURL      string              `json:"githubUploadURL,omitempty"`
	DeleteHookOnFinish   bool                `json:"deleteHookOnFinish,omitempty"`
	Metadata             map[string]string   `json:"metadata,omitempty"`
	Repositories         []OwnedRepositories `json:"repositories,omitempty"`
	Organizations        []string            `json:"organizations,omitempty"`
	GithubApp            *GithubAppCreds     `json:"githubApp,omitempty"`
	Filter               *EventSourceFilter  `json:"filter,omitempty"`
}

// OwnedRepositories names repositories of one owner.
type OwnedRepositories struct {
	Owner string   `json:"owner,omitempty"`
	Names []string `json:"names,omitempty"`
}

// GithubAppCreds authenticates as a GitHub App.
type GithubAppCreds struct {
	PrivateKey     *SecretKeySelector `json:"privateKey"`
	AppID          int64              `json:"appID"`
	InstallationID int64              `json:"installationID"`
}

// GitlabEventSource receives GitLab webhook deliveries.
type GitlabEventSource struct {
	Webhook               *WebhookContext    `json:"webhook,omitempty"`
	DeprecatedProjectID   string             `json:"projectID,omitempty"`
	Events                []string           `json:"events"`
	AccessToken           *SecretKeySelector `json:"accessToken,omitempty"`
	EnableSSLVerification bool               `json:"enableSSLVerification,omitempty"`
	GitlabBaseURL         string             `json:"gitlabBaseURL,omitempty"`
	DeleteHookOnFinish    bool               `json:"deleteHookOnFinish,omitempty"`
	Metadata              map[string]string  `json:"metadata,omitempty"`
	Projects              []string           `json:"projects,omitempty"`
	SecretToken           *SecretKeySelector `json:"secretToken,omitempty"`
	Filter                *EventSourceFilter `json:"filter,omitempty"`
	Groups                []string           `json:"groups,omitempty"`
}

// NATSEventsSource subscribes to a NATS subject.
type NATSEventsSource struct {
	URL               string             `json:"url"`
	Subject           string             `json:"subject"`
	ConnectionBackoff *Backoff           `json:"connectionBackoff,omitempty"`
	JSONBody          bool               `json:"jsonBody,omitempty"`
	TLS               *TLSConfig         `json:"tls,omitempty"`
	Metadata          map[string]string  `json:"metadata,omitempty"`
	Auth              *NATSAuth          `json:"auth,omitempty"`
	Filter            *EventSourceFilter `json:"filter,omitempty"`
	Queue             *string            `json:"queue,omitempty"`
}

// KafkaEventSource consumes a topic of a (user's) Kafka cluster.
type KafkaEventSource struct {
	URL                  string              `json:"url"`
	Partition            string              `json:"partition,omitempty"`
	Topic                string              `json:"topic"`
	ConnectionBackoff    *Backoff            `json:"connectionBackoff,omitempty"`
	TLS                  *TLSConfig          `json:"tls,omitempty"`
	JSONBody             bool                `json:"jsonBody,omitempty"`
	Metadata             map[string]string   `json:"metadata,omitempty"`
	ConsumerGroup        *KafkaConsumerGroup `json:"consumerGroup,omitempty"`
	LimitEventsPerSecond int64               `json:"limitEventsPerSecond,omitempty"`
	Version              string              `json:"version,omitempty"`
	SASL                 *SASLConfig         `json:"sasl,omitempty"`
	Filter               *EventSourceFilter  `json:"filter,omitempty"`
	Config               string              `json:"config,omitempty"`
	SchemaRegistry       Opaque              `json:"schemaRegistry,omitempty"`
	AWSMSKIAMAuth        Opaque              `json:"awsMskIamAuth,omitempty"`
}

// KafkaConsumerGroup names the consumer group a Kafka event source joins.
type KafkaConsumerGroup struct {
	GroupName         string `json:"groupName"`
	Oldest            bool   `json:"oldest,omitempty"`
	RebalanceStrategy string `json:"rebalanceStrategy,omitempty"`
}

// SQSEventSource receives messages from an AWS SQS queue.
type SQSEventSource struct {
	AccessKey       *SecretKeySelector `json:"accessKey,omitempty"`
	SecretKey       *SecretKeySelector `json:"secretKey,omitempty"`
	Region          string             `json:"region"`
	Queue           string             `json:"queue"`
	WaitTimeSeconds int64              `json:"waitTimeSeconds,omitempty"`
	RoleARN         string             `json:"roleARN,omitempty"`
	JSONBody        bool               `json:"jsonBody,omitempty"`
	QueueAccountID  string             `json:"queueAccountId,omitempty"`
	Metadata        map[string]string  `json:"metadata,omitempty"`
	DLQ             bool               `json:"dlq,omitempty"`
	Filter          *EventSourceFilter `json:"filter,omitempty"`
	Endpoint        string             `json:"endpoint,omitempty"`
	SessionToken    *SecretKeySelector `json:"sessionToken,omitempty"`
}

// CalendarEventSource fires on a cron schedule or at a fixed interval.
type CalendarEventSource struct {
	// Schedule is a five-field cron expression (minute hour day-of-month month day-of-week), as
	// Argo parses it: no seconds, no descriptors such as @every; a TZ= prefix is allowed.
	Schedule string `json:"schedule,omitempty"`
	// Interval is a Go duration such as "10s"; Schedule wins when both are set in Argo.
	Interval string `json:"interval,omitempty"`
	// ExclusionDates are RFC 5545 EXDATE values ("EXDATE:20190102T150405Z[,...]"): a fire that
	// falls on one of their days is skipped.
	ExclusionDates []string           `json:"exclusionDates,omitempty"`
	Timezone       string             `json:"timezone,omitempty"`
	Metadata       map[string]string  `json:"metadata,omitempty"`
	Persistence    *EventPersistence  `json:"persistence,omitempty"`
	Filter         *EventSourceFilter `json:"filter,omitempty"`
}

// EventPersistence says whether a calendar catches up on the fires it missed.
type EventPersistence struct {
	Catchup *CatchupConfiguration `json:"catchup,omitempty"`
	// ConfigMap is where Argo keeps the last fire; kevents keeps it in Kafka and ignores it.
	ConfigMap *ConfigMapPersistence `json:"configMap,omitempty"`
}

// CatchupConfiguration enables catch-up; MaxDuration (a Go duration) bounds how far back.
type CatchupConfiguration struct {
	Enabled     bool   `json:"enabled,omitempty"`
	MaxDuration string `json:"maxDuration,omitempty"`
}

// ConfigMapPersistence names the ConfigMap Argo keeps a calendar's last fire in.
type ConfigMapPersistence struct {
	Name             string `json:"name,omitempty"`
	CreateIfNotExist bool   `json:"createIfNotExist,omitempty"`
}
